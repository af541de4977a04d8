"""Packets through ports numanet plumbed against packets through ports made by hand.

The same two dpdk-testpmd peers (one virtio_user each, vhost-user server, macswap
ping-pong as ``numanet demo`` runs it: demo/traffic.py) pass packets through two ports of
one OVS-DPDK bridge, the same PMD thread forwarding, in two set-ups that take turns in
one run:

  numanet    the real agent (bench_cni.py's pod path: kubelet stand-in, Allocate, port
             prepared, CNI ADD through the installed plugin); the sockets and MACs the
             pods' numanet.json name
  by hand    ``ovs-vsctl add-port ... type=dpdkvhostuserclient
             options:vhost-server-path=...`` for two sockets, the same MACs

Printed: the packet rate each way and in all (kpps) per set-up, the median over the
rounds with the range, and the ratio numanet / by hand (target: at least 0.95).

    .venv/bin/python bench/bench_datapath.py [--rounds 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import bench_cni  # noqa: E402
import pod_path  # noqa: E402

from demo import traffic  # noqa: E402
from demo.testpmd import Testpmd, line_buffered  # noqa: E402
from deviceplugin import naming  # noqa: E402

TESTPMD = "dpdk-testpmd"


def peer(index: int, socket: Path, mac: str, peer_mac: str, prefix: str) -> Testpmd:
    """One pod's testpmd: a virtio_user vhost-user server at ``socket`` (OVS connects),
    macswap towards ``peer_mac``, on the CPUs the demo gives pod ``index``."""
    main, forward = traffic.app_cpus(None, index)
    lcores = ",".join(str(c) for c in dict.fromkeys((main, forward)))
    cmd = ["taskset", "-c", lcores, *line_buffered([
        TESTPMD, "-l", lcores, "--main-lcore", str(main), "--no-pci", "--no-huge", "-m", "256",
        f"--file-prefix={prefix}",
        f"--vdev=virtio_user0,path={socket},server=1,queues=1,queue_size=256,mac={mac}",
        "--", "-i", "--total-num-mbufs=8192", "--forward-mode=macswap",
        f"--eth-peer=0,{peer_mac}"])]
    return Testpmd(cmd, prefix)


def link_states(ovs, names: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    out = ovs.vsctl("--columns=name,link_state", "--format=json", "list", "Interface",
                    *names, wait=False)
    return [row[1] for row in json.loads(out)["data"]]


def run_peers(ovs, ports: list[str], sockets: list[Path], macs: list[str],  # type: ignore[no-untyped-def]
              seconds: float, tag: str) -> traffic.Result:
    pmds = [peer(i, sockets[i], macs[i], macs[1 - i], f"nnbdp-{os.getpid()}-{tag}{i}")
            for i in (0, 1)]
    try:
        for pmd in pmds:
            pmd.launch()
        for pmd in pmds:
            pmd.wait_ready(30)
        deadline = time.monotonic() + 30
        while not (all(p.link_up(0) for p in pmds)
                   and link_states(ovs, ports) == ["up", "up"]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"links not up for {tag}: {link_states(ovs, ports)}")
            time.sleep(0.1)
        return traffic.measure(pmds[0], pmds[1], ("a", "b"), seconds, lambda _line: None)
    finally:
        for pmd in pmds:
            pmd.close()


def numanet_round(run: pod_path.AgentRun, seconds: float, r: int) -> tuple[traffic.Result,
                                                                             list[str]]:
    """Two pods through the agent: admitted, ADDed, their testpmds, DELed."""
    kubelet = run.kubelet
    assert kubelet is not None
    attachments, sockets, macs, confs = [], [], [], []
    names = [f"dp{r}-a", f"dp{r}-b"]
    try:
        for name in names:
            answers = kubelet.admit_pod(pod_path.NAMESPACE, name, [pod_path.ContainerSpec(
                pod_path.CONTAINER, {pod_path.RESOURCE: 1})])
            device_id = answers[pod_path.CONTAINER][pod_path.RESOURCE].envs[
                naming.pool_env_name(pod_path.POOL)].split(",")[0]
            attachment = pod_path.Attachment(
                pod_path.NAMESPACE, name, str(uuid.uuid4()), uuid.uuid4().hex * 2,
                Path("/var/run/netns") / run.node.netns_name, pod_path.IFNAME, device_id,
                run.cni_devinfo_dir / f"{pod_path.NAMESPACE}-{name}-{pod_path.IFNAME}.json")
            conf = json.dumps(pod_path.Network(pod_path.NETWORK, pod_path.RESOURCE,
                                               pod_path.SUBNET, run.node.ipam_dir)
                              .netconf(attachment)).encode()
            pod_path.timed([str(run.node.plugin)], pod_path._cni_env(
                "ADD", attachment, naming.cni_socket(run.run_dir)), conf)
            slot_dir = naming.slot_dir(run.run_dir, device_id)
            config = json.loads((slot_dir / "numanet.json").read_text())
            attachments.append(attachment)
            confs.append(conf)
            sockets.append(slot_dir / "sock")
            macs.append(config["mac"])
        from vswitch.ovs.ports import port_name

        ports = [port_name(a.device_id) for a in attachments]
        return run_peers(run.node.ovs, ports, sockets, macs, seconds, f"n{r}"), macs
    finally:
        for attachment, conf in zip(attachments, confs, strict=True):
            pod_path.timed([str(run.node.plugin)], pod_path._cni_env(
                "DEL", attachment, naming.cni_socket(run.run_dir)), conf)
        for name in names:
            kubelet.remove_pod(pod_path.NAMESPACE, name)


def hand_round(node: pod_path.Node, macs: list[str], seconds: float, r: int) -> traffic.Result:
    """Two ports made with ovs-vsctl, the same testpmds."""
    ovs, bridge = node.ovs, node.bridge
    directory = node.volatile_dir / f"hand{r}"
    directory.mkdir()
    ports = [f"hand{r}a", f"hand{r}b"]
    sockets = [directory / "a.sock", directory / "b.sock"]
    try:
        for name, socket in zip(ports, sockets, strict=True):
            ovs.vsctl("add-port", bridge, name, "--", "set", "Interface", name,
                      "type=dpdkvhostuserclient", f"options:vhost-server-path={socket}")
        return run_peers(ovs, ports, sockets, macs, seconds, f"h{r}")
    finally:
        for name in ports:
            ovs.vsctl("--if-exists", "del-port", bridge, name)


def total(result: traffic.Result) -> float:
    return result.a_to_b.pps + result.b_to_a.pps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--plugin-python", default=bench_cni.HOST_PYTHON)
    args = parser.parse_args()
    from cni.install import install
    from demo.private_ovs import INSTALL_HINT, PrivateOvs, missing_ovs_parts

    try:
        from cni.install import find_relay
        relay = find_relay()
    except ImportError:  # a tree before the relay (a base-line run)
        relay = None
    if missing_ovs_parts() or shutil.which(TESTPMD) is None \
            or not os.access(bench_cni.HOST_LOCAL, os.X_OK):
        print(f"cannot run: {INSTALL_HINT} dpdk-dev containernetworking-plugins")
        return 2
    base = Path(tempfile.mkdtemp(prefix="nnbdp-", dir="/tmp"))
    volatile = Path(tempfile.mkdtemp(prefix="nnbdp-", dir=bench_cni.TMPFS))
    netns_name = f"nndp-{os.getpid()}"
    ovs = PrivateOvs(base / "ovs")
    run = None
    try:
        ovs.start()
        ovs.vsctl("add-br", bench_cni.BRIDGE, "--", "set", "bridge", bench_cni.BRIDGE,
                  "datapath_type=netdev")
        subprocess.run(["ip", "netns", "add", netns_name], check=True)
        node = pod_path.Node(ovs=ovs, bridge=bench_cni.BRIDGE, netns_name=netns_name,
                             plugin=install(base / "bin" / "numanet", args.plugin_python,
                                            **({"relay": relay} if relay else {})),
                             work_dir=base, volatile_dir=volatile)
        node.ipam_dir.mkdir()
        run = pod_path.AgentRun(node, "datapath", prepare=True)
        run.start()
        print(f"data path bench: {args.rounds} rounds of {args.seconds:g} s per set-up, two "
              f"testpmd peers (virtio_user, macswap ping-pong), one OVS PMD (cpu mask "
              f"{ovs.pmd_cpu_mask}), {len(os.sched_getaffinity(0))} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}")
        ours: list[traffic.Result] = []
        hand: list[traffic.Result] = []
        for r in range(args.rounds):
            # Turns alternate, so neither set-up always runs on a warmer machine.
            if r % 2 == 0:
                result, macs = numanet_round(run, args.seconds, r)
                ours.append(result)
                hand.append(hand_round(node, macs, args.seconds, r))
            else:
                macs = ["02:00:00:00:aa:01", "02:00:00:00:aa:02"]
                hand.append(hand_round(node, macs, args.seconds, r))
                ours.append(numanet_round(run, args.seconds, r)[0])
            print(f"  round {r + 1}: numanet {traffic.describe(ours[-1])}; by hand "
                  f"{traffic.describe(hand[-1])}")
        medians = {}
        for name, results in (("numanet (agent + CNI)", ours), ("by hand (ovs-vsctl)", hand)):
            totals = sorted(total(x) / 1000 for x in results)
            medians[name] = statistics.median(totals)
            a_b = statistics.median(x.a_to_b.pps / 1000 for x in results)
            b_a = statistics.median(x.b_to_a.pps / 1000 for x in results)
            print(f"  {name:<24} a->b {a_b:7.1f} kpps  b->a {b_a:7.1f} kpps  both "
                  f"{medians[name]:7.1f} kpps (rounds {totals[0]:.1f}..{totals[-1]:.1f})")
        ratio = medians["numanet (agent + CNI)"] / medians["by hand (ovs-vsctl)"]
        print(f"target numanet's ports >= 0.95x hand-made ports (median, both ways): "
              f"{ratio:.2f}x  {'OK' if ratio >= 0.95 else 'MISSED'}")
        found = pod_path.leaks(run)
        print(f"leak check: {'none' if not found else '; '.join(found)}")
        return 1 if found else 0
    finally:
        if run is not None:
            run.stop()
        subprocess.run(["ip", "netns", "delete", netns_name], check=False, capture_output=True)
        ovs.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(volatile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
