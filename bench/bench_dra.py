"""DRA NodePrepareResources latency beside the device plugin's Allocate, same run, same
agent: 4096 slots in each front end's pool on 4 NUMA nodes, over real gRPC.

The agent runs in its own process (as on a node) with two pools of 1024 slots per node:
``vhostuser-dp`` served by the device plugin, ``vhostuser-dra`` by DRA (ResourceSlices
published to an API server stand-in over HTTP, the kubelet DRA plugin registered with the
kubelet DRA stand-in). This process times, one slot per call:
- Allocate (device plugin): slot directory, device-info file, allocation record;
- NodePrepareResources (DRA v1): the claim read from the API server stand-in over HTTP,
  then the same Allocator code, a CDI spec per claim and the claim checkpoint;
- NodeUnprepareResources.
Prepare pays what Allocate does plus a claim GET and two more small files; the target is
Prepare p99 < 10 ms. The vSwitch is an in-memory test double; state lives on tmpfs.

    .venv/bin/python bench/bench_dra.py [--calls 500] [--strict]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import grpc  # noqa: E402
from helpers.deviceplugin import InMemoryVSwitchDouble  # noqa: E402
from helpers.dra import allocated_claim  # noqa: E402
from helpers.sysfs import HUGE_2M, NodeSpec, build_sysfs  # noqa: E402

from agent.agent import Agent, AgentOptions  # noqa: E402
from demo.apiserver_standin import ApiServerStandin  # noqa: E402
from demo.kubelet_standin import KubeletStandin  # noqa: E402
from demo.kubelet_standin.dra import DraKubeletStandin  # noqa: E402
from protos.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc  # noqa: E402
from protos.dra.v1 import api_pb2 as dra_pb2  # noqa: E402
from protos.dra.v1 import api_pb2_grpc as dra_grpc  # noqa: E402

NODES = 4
SLOTS_PER_NODE = 1024
NODE = "bench-node"
DRIVER = "numanet.io"
DP_RESOURCE = "numanet.io/vhostuser-dp"
CONFIG = f"""\
hugepages: {{pageSize: 2Mi, path: @HUGEPAGES@}}
pools:
  - {{name: vhostuser-dp, kind: vhost-user, vswitch: ovs, slotsPerNode: {SLOTS_PER_NODE}}}
  - {{name: vhostuser-dra, kind: vhost-user, vswitch: ovs, slotsPerNode: {SLOTS_PER_NODE},
     frontend: dra}}
"""


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def report(name: str, samples_s: list[float], target_ms: float | None) -> bool:
    ms = [s * 1000 for s in samples_s]
    p50, p99 = percentile(ms, 0.50), percentile(ms, 0.99)
    ok = target_ms is None or p99 < target_ms
    target = f"target p99<{target_ms:g} ms  {'OK' if ok else 'MISSED'}" if target_ms else ""
    print(f"{name:<26} n={len(ms):<5} p50={p50:7.3f} ms  p99={p99:7.3f} ms  "
          f"max={max(ms):7.3f} ms  {target}")
    return ok


def serve_agent(root: Path) -> int:
    """Child process: the real agent with a vSwitch double, until SIGTERM."""
    logging.basicConfig(level=logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    double = InMemoryVSwitchDouble("ovs")
    agent = Agent(AgentOptions(
        config_path=root / "config.yaml", kubelet_dir=root / "kubelet", run_dir=root / "run",
        sysfs=root / "sys", devinfo_dir=root / "devinfo", metrics_address="off", udev=False,
        vswitch_factory=lambda name, config: double, node_name=NODE,
        kubeconfig=root / "kubeconfig", dra_cdi_dir=root / "cdi"))
    agent.start()
    stop.wait()
    agent.stop()
    return 0


def measure(root: Path, calls: int, strict: bool) -> int:
    apiserver = ApiServerStandin().start()
    apiserver.kubeconfig(root / "kubeconfig")
    plugin_dir = root / "kubelet" / "device-plugins"
    kubelet = KubeletStandin(plugin_dir).start()
    dra_kubelet = DraKubeletStandin(root / "kubelet",
                                    lambda ns, name: apiserver.claims.get((ns, name))).start()
    child = subprocess.Popen([sys.executable, __file__, "--agent", str(root)])
    try:
        total = NODES * SLOTS_PER_NODE
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
                len(kubelet.devices(DP_RESOURCE)) == total
                and len(apiserver.devices(NODE, DRIVER)) == total):
            time.sleep(0.1)
        published = apiserver.devices(NODE, DRIVER)
        if len(published) != total or len(kubelet.devices(DP_RESOURCE)) != total:
            print(f"the agent did not advertise its slots within 120 s "
                  f"(DRA {len(published)}, device plugin {len(kubelet.devices(DP_RESOURCE))})",
                  file=sys.stderr)
            return 2
        registration = dra_kubelet.wait_registered(DRIVER, timeout=30)
        slices = apiserver.node_slices(NODE, DRIVER)
        print(f"{total} slots per front end on {NODES} NUMA nodes (agent pid {child.pid}); "
              f"DRA: {len(slices)} ResourceSlices, {len(apiserver.refused)} refused, service "
              f"{registration.service}; {calls} calls per measurement; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
        rng = random.Random(42)

        channel = grpc.insecure_channel(f"unix:{plugin_dir / 'numanet-vhostuser-dp.sock'}")
        stub = api_pb2_grpc.DevicePluginStub(channel)
        dp_ids = rng.sample(sorted(kubelet.devices(DP_RESOURCE)), min(calls + 20, total))
        allocate: list[float] = []
        for i, device_id in enumerate(dp_ids):
            request = api_pb2.AllocateRequest(container_requests=[
                api_pb2.ContainerAllocateRequest(devices_ids=[device_id])])
            started = time.perf_counter()
            answer = stub.Allocate(request, timeout=5)
            if i >= 20:  # the first calls warm the connection up
                allocate.append(time.perf_counter() - started)
            assert answer.container_responses[0].envs["NUMANET_VHOSTUSER_DP"] == device_id
        channel.close()

        dra_channel = grpc.insecure_channel(f"unix:{registration.endpoint}")
        dra_stub = dra_grpc.DRAPluginStub(dra_channel)
        devices = rng.sample(sorted(published), min(calls + 20, total))
        claims = []
        for i, (pool, device) in enumerate(devices):
            claim = apiserver.add_claim(allocated_claim(f"claim-{i}", f"pod-{i}", f"uid-{i}",
                                                        [("net", pool, device)], node=NODE))
            claims.append(dra_pb2.Claim(namespace="default", name=f"claim-{i}",
                                        uid=claim["metadata"]["uid"]))
        prepare: list[float] = []
        for i, claim in enumerate(claims):
            started = time.perf_counter()
            answer = dra_stub.NodePrepareResources(
                dra_pb2.NodePrepareResourcesRequest(claims=[claim]), timeout=5)
            if i >= 20:
                prepare.append(time.perf_counter() - started)
            result = answer.claims[claim.uid]
            assert not result.error, result.error
            assert result.devices[0].device_name == devices[i][1]
        unprepare: list[float] = []
        for i, claim in enumerate(claims):
            started = time.perf_counter()
            answer = dra_stub.NodeUnprepareResources(
                dra_pb2.NodeUnprepareResourcesRequest(claims=[claim]), timeout=5)
            if i >= 20:
                unprepare.append(time.perf_counter() - started)
            assert not answer.claims[claim.uid].error
        dra_channel.close()

        print()
        ok = report("Allocate (device plugin)", allocate, 5.0)
        ok &= report("NodePrepareResources", prepare, 10.0)
        report("NodeUnprepareResources", unprepare, None)
        return 0 if ok or not strict else 1
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        dra_kubelet.stop()
        kubelet.stop()
        apiserver.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--agent", type=Path, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.agent:
        return serve_agent(args.agent)
    logging.basicConfig(level=logging.WARNING)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        os.environ.pop(name, None)
    base = "/dev/shm" if Path("/dev/shm").is_dir() else "/tmp"
    root = Path(tempfile.mkdtemp(prefix="ndbench-", dir=base))
    try:
        nodes = [NodeSpec(id=k, cpus=frozenset({2 * k, 2 * k + 1}),
                          hugepages={HUGE_2M: (1024, 1024)}) for k in range(NODES)]
        build_sysfs(root / "sys", nodes)
        (root / "hugepages").mkdir()
        (root / "config.yaml").write_text(CONFIG.replace("@HUGEPAGES@", str(root / "hugepages")))
        return measure(root, args.calls, args.strict)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
