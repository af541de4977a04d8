"""CNI ADD and DEL latency, the shim exec included, beside ovs-vsctl add-port/del-port.

Everything real except the kubelet: a private OVS-DPDK, host-local IPAM, a network
namespace, and the plugin executed per call exactly as a runtime does. Two phases, on the
same OVS and bridge:

Cold ADD, no port prepared: the CNI service alone in its own process (as in the agent:
long-lived ovsdbapp connection, kubelet pod-resources check over gRPC, fixed allocations
standing in for the kubelet's), no Allocate before the ADD. Each cycle runs:
  CNI ADD + DEL through the installed plugin (python -m cni.install: the compiled relay,
                                              build/numanet-relay, when `make relay` built
                                              it, as the image installs it)
  CNI ADD + DEL through the installed shim   (the fallback: #!python3 -IS launcher +
                                              precompiled shim, the host's python3 as
                                              install-cni.sh picks it)
  CNI ADD + DEL through the console script   (.venv/bin/numanet-cni, python with site)
  ovs-vsctl add-port + del-port              (same port type: dpdkvhostuserclient)
Then: CPU time per call of the plugin, the service and ovs-vsctl, the service process's RSS,
and a leak check (ports, files, records, IPAM leases).

Pod path (bench/pod_path.py): the real agent process; per pod the kubelet stand-in's
GetPreferredAllocation + Allocate, a sandbox gap (--sandbox-gap-ms), CNI ADD and DEL through
the installed plugin, the pod's end. Once with the agent's default prepareAtAllocate (the
slot's OVS port made at Allocate, claimed at ADD), once with it off; its own leak check,
the agent's log included.

Run directories are on tmpfs, as /run is on a node. Target: CNI ADD p50 no slower than one
ovs-vsctl add-port, judged for both paths against ovs-vsctl timed in the same phase.
bench/profile_cni_add.py splits an ADD into its steps (``--prepared``: a claimed port).

    .venv/bin/python bench/bench_cni.py [--cycles 200] [--sandbox-gap-ms 100] [--pmd-maxsleep US]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import pod_path  # noqa: E402

# exec_call is re-exported: bench/profile_cni_add.py runs its commands with bench_cni's.
from cni_timing import CPU, row, timed, verdict  # noqa: E402
from cni_timing import exec_call as exec_call  # noqa: E402

from deviceplugin import naming  # noqa: E402
from deviceplugin.slots import Slot  # noqa: E402

POOL = "vhostuser-ovs"
RESOURCE = naming.resource_name(naming.DEFAULT_PREFIX, POOL)
DEVICES = 8
HOST_LOCAL = "/usr/lib/cni/host-local"
# deploy/image/install-cni.sh writes the host's python3 into the plugin's #! line (Multus
# runs the plugin on the host); the bench does the same when the machine has one.
HOST_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                    if os.access(p, os.X_OK)), sys.executable)
SHIM = Path(sys.executable).with_name("numanet-cni")
NETWORK = "bench-net"
TMPFS = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
BRIDGE = "nnbench"


class BenchSlots:
    """A SlotLookup over DEVICES vhost-user server slots on NUMA node 0 (from naming.py)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def slot(self, device_id: str) -> Slot | None:
        try:
            pool, node, index = naming.parse_slot_id(device_id)
        except naming.InvalidName:
            return None
        if pool != POOL or node != 0 or index >= DEVICES:
            return None
        return Slot(device_id=device_id, pool=POOL, resource=RESOURCE, kind="vhost-user",
                    numa_node=0, index=index, vswitch="ovs", container_role="server",
                    host_dir=naming.slot_dir(self.run_dir, device_id),
                    container_dir=naming.container_slot_dir(POOL, device_id))

    def pool_resource(self, pool: str) -> str | None:
        return RESOURCE if pool == POOL else None

    def pool_vswitch(self, pool: str) -> str | None:
        return "ovs" if pool == POOL else None


# -- the service process (cold path) ----------------------------------------------------------


def agent_main(args: argparse.Namespace) -> int:
    """The CNI service alone, as the agent starts it; stops on SIGTERM."""
    global DEVICES
    DEVICES = int(args.devices)
    logging.basicConfig(level=logging.WARNING, format="agent %(levelname)s %(message)s")
    # The bench's own refused calls (its round-trip figure) would log a warning each.
    logging.getLogger("cni.service").setLevel(logging.ERROR)
    from cni.service import start_agent_service
    from vswitch.ovs.backend import OvsVSwitch

    switch = OvsVSwitch(args.db, args.bridge, timeout=10.0)
    switch.connect()
    service = start_agent_service(slots=BenchSlots(Path(args.run_dir)),
                                  vswitches=lambda: {"ovs": switch}, run_dir=Path(args.run_dir),
                                  pod_resources_socket=Path(args.pod_resources),
                                  devinfo_root=Path(args.devinfo_root))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    service.stop()
    switch.close()
    return 0


# -- cold ADD, no port prepared -------------------------------------------------------------


@dataclass
class ColdResult:
    add_installed: float  # p50, ms
    add_console: float
    vsctl: float
    del_installed: float = 0.0
    vsctl_del: float = 0.0
    add_shim: float = 0.0
    leaks: list[str] = field(default_factory=list)


class ColdPhase:
    """The CNI service alone (no device plugin, no Allocate), the plugin per call, and
    ovs-vsctl in the same cycles."""

    def __init__(self, args: argparse.Namespace, node: pod_path.Node) -> None:
        self.args = args
        self.node = node
        self.run_dir = node.volatile_dir / "run"
        self.devinfo_root = node.volatile_dir / "devinfo"
        self.ipam_dir = node.work_dir / "ipam"
        self.vsctl_dir = node.volatile_dir / "vsctl"
        self.device_ids = [naming.slot_device_id(POOL, 0, i) for i in range(DEVICES)]
        self.kubelet: Any = None  # PodResourcesStandIn
        self.service: subprocess.Popen[str] | None = None
        self.direct: Any = None  # the bench's own OvsVSwitch connection

    # -- lifecycle --

    def start(self) -> None:
        from demo.kubelet_standin.podresources import PodAllocation, PodResourcesStandIn
        from vswitch.ovs.backend import OvsVSwitch

        for device_id in self.device_ids:  # what Allocate prepares
            naming.slot_dir(self.run_dir, device_id).mkdir(parents=True, mode=0o700)
        self.vsctl_dir.mkdir()
        (self.node.volatile_dir / "direct").mkdir()
        self.kubelet = PodResourcesStandIn(
            self.node.work_dir / "kubelet" / "pod-resources" / "kubelet.sock",
            [PodAllocation("bench", f"pod-{i}", "app", RESOURCE, (d,), (0,))
             for i, d in enumerate(self.device_ids)]).start()
        self.service = subprocess.Popen(
            [sys.executable, __file__, "--agent", "--db", self.node.ovs.db,
             "--bridge", self.node.bridge, "--run-dir", str(self.run_dir),
             "--pod-resources", str(self.kubelet.socket), "--devices", str(DEVICES),
             "--devinfo-root", str(self.devinfo_root)], stdout=subprocess.PIPE, text=True)
        assert self.service.stdout is not None
        if self.service.stdout.readline().strip() != "ready":
            raise RuntimeError("the CNI service process did not start")
        # For the breakdown: the plug alone, as the service does it (one ovsdbapp
        # transaction, then waiting for ovs-vswitchd to apply it, as ovs-vsctl waits).
        self.direct = OvsVSwitch(self.node.ovs.db, self.node.bridge, timeout=10.0)
        self.direct.connect()

    def stop(self) -> None:
        try:
            if self.direct is not None:
                self.direct.close()
        finally:
            if self.service is not None:
                self.service.terminate()
                self.service.wait(30)
            if self.kubelet is not None:
                self.kubelet.stop()

    # -- one call each --

    def cni(self, exe: Path, command: str, i: int, cpu_key: str | None = None) -> float:
        env = {"PATH": "/usr/bin:/bin", "NUMANET_CNI_SOCKET": str(naming.cni_socket(self.run_dir)),
               "CNI_COMMAND": command, "CNI_CONTAINERID": f"bench{i:05d}",
               "CNI_NETNS": f"/var/run/netns/{self.node.netns_name}", "CNI_IFNAME": "net1",
               "CNI_PATH": "/usr/lib/cni",
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;"
                           f"K8S_POD_NAME=pod-{i % DEVICES}"}
        conf = {"cniVersion": "1.1.0", "name": NETWORK, "type": "numanet",
                "deviceID": self.device_ids[i % DEVICES],
                "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir),
                         "ranges": [[{"subnet": "10.99.0.0/24"}]]}}
        return timed([str(exe)], env, json.dumps(conf).encode(), cpu_key)[0]

    def vsctl_add(self, i: int, cpu_key: str | None = None) -> float:
        name = f"vs{i % DEVICES}"
        return timed(["ovs-vsctl", f"--db={self.node.ovs.db}", "add-port", self.node.bridge,
                      name, "--", "set", "Interface", name, "type=dpdkvhostuserclient",
                      f"options:vhost-server-path={self.vsctl_dir}/{name}.sock"],
                     self.node.ovs.env, cpu_key=cpu_key)[0]

    def vsctl_del(self, i: int) -> float:
        return timed(["ovs-vsctl", f"--db={self.node.ovs.db}", "del-port", self.node.bridge,
                      f"vs{i % DEVICES}"], self.node.ovs.env)[0]

    def settle(self) -> None:
        """Until ovs-vswitchd applied every change so far: a DEL answers before vswitchd
        removed the port (it settles in the background), and the next call timed must
        not pay for that (ovs-vsctl's del-port waits for it, so its add-port never does)."""
        if not self.direct.settle(10.0):
            raise RuntimeError("ovs-vswitchd did not settle within 10 s")

    def direct_plug(self, i: int) -> float:
        from vswitch.api import Owner, PortSpec

        spec = PortSpec(device_id=f"direct-n0-{i % DEVICES:03d}", kind="vhost-user",
                        container_role="server",
                        socket_path=f"{self.node.volatile_dir}/direct/{i % DEVICES}",
                        network=self.node.bridge, owner=Owner("bench", "direct", f"d{i}", "net1"))
        self.settle()
        start = time.perf_counter()
        self.direct.plug(spec)
        elapsed = time.perf_counter() - start
        self.direct.unplug(spec.device_id)
        return elapsed

    def service_cpu(self) -> float:
        import psutil

        assert self.service is not None
        times = psutil.Process(self.service.pid).cpu_times()  # children: the IPAM plugin
        return float(times.user + times.system + times.children_user + times.children_system)

    # -- the phase --

    def measure(self) -> tuple[dict[str, list[float]], list[float]]:
        """The cycles; samples per figure, and the service's CPU time per installed ADD."""
        args, plugin = self.args, self.node.plugin
        shim = self.node.shim or plugin
        results: dict[str, list[float]] = {k: [] for k in (
            "add_console", "del_console", "add_installed", "del_installed", "add_shim",
            "del_shim", "vsctl_add", "vsctl_del", "version_console", "version_installed",
            "version_shim", "python_floor", "refused", "plug")}
        # A call the agent refuses at once (no stdin): the plugin's start, the socket round
        # trip and the service's thread, without any verb's work.
        refused_env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "ADD",
                       "NUMANET_CNI_SOCKET": str(naming.cni_socket(self.run_dir))}
        version_env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "VERSION"}
        service_add_cpu: list[float] = []
        for i in range(args.warmup + args.cycles):
            measured = i >= args.warmup
            self.settle()
            before = self.service_cpu()
            add_installed = self.cni(plugin, "ADD", 4 * i + 1, "shim ADD" if measured else None)
            if measured:
                service_add_cpu.append(self.service_cpu() - before)
            sample = {"add_installed": add_installed,
                      "del_installed": self.cni(plugin, "DEL", 4 * i + 1)}
            self.settle()
            sample["add_shim"] = self.cni(shim, "ADD", 4 * i + 2)
            sample["del_shim"] = self.cni(shim, "DEL", 4 * i + 2)
            self.settle()
            sample["add_console"] = self.cni(SHIM, "ADD", 4 * i)
            sample["del_console"] = self.cni(SHIM, "DEL", 4 * i)
            self.settle()
            sample |= {
                "vsctl_add": self.vsctl_add(i, "vsctl add-port" if measured else None),
                "vsctl_del": self.vsctl_del(i),
                "version_console": timed([str(SHIM)], version_env)[0],
                "version_installed": timed([str(plugin)], version_env)[0],
                "version_shim": timed([str(shim)], version_env)[0],
                "refused": exec_call([str(plugin)], refused_env)[2],
                "python_floor": timed([args.plugin_python, "-IS", "-c", "pass"],
                                      version_env)[0],
                "plug": self.direct_plug(i),
            }
            if measured:
                for key, value in sample.items():
                    results[key].append(value)
        return results, service_add_cpu

    def report(self, results: dict[str, list[float]], service_add_cpu: list[float]
               ) -> ColdResult:
        import psutil

        assert self.service is not None
        total = self.args.warmup + self.args.cycles
        rss_mb = psutil.Process(self.service.pid).memory_info().rss / 2**20
        print("cold ADD, no port prepared: the CNI service alone, no Allocate before the ADD")
        print("latency (wall clock per call, process exec included):")
        relay = self.node.plugin != self.node.shim
        print(f"  (installed plugin: {'the compiled relay' if relay else 'the Python shim'}; "
              f"installed shim: #!{self.args.plugin_python} -IS)")
        add_installed, _ = row("CNI ADD, installed plugin", results["add_installed"])
        del_installed, _ = row("CNI DEL, installed plugin", results["del_installed"])
        add_shim, _ = row("CNI ADD, installed Python shim", results["add_shim"])
        row("CNI DEL, installed Python shim", results["del_shim"])
        add_console, _ = row("CNI ADD, console script (.venv/bin/numanet-cni)",
                             results["add_console"])
        row("CNI DEL, console script", results["del_console"])
        vsctl_p50, _ = row("ovs-vsctl add-port (dpdkvhostuserclient)", results["vsctl_add"])
        vsctl_del, _ = row("ovs-vsctl del-port", results["vsctl_del"])
        print("where the time goes:")
        row("ovsdbapp plug in-process (txn + vswitchd apply)", results["plug"])
        row(f"interpreter start: {self.args.plugin_python} -IS -c pass", results["python_floor"])
        row("VERSION, installed plugin (answered by itself)", results["version_installed"])
        row("VERSION, installed Python shim (launcher + shim + json)", results["version_shim"])
        row("a call the agent refuses at once, installed plugin", results["refused"])
        row("VERSION, console script (shim alone + json)", results["version_console"])
        print("CPU time per call, mean (user+sys, sampled by the kernel per tick, so only the "
              "mean means much; it moves far less with the machine's load than wall time):")
        for name, samples in (("CNI ADD: the installed plugin's process", CPU["shim ADD"]),
                              ("CNI ADD: the agent (service, OVSDB client, host-local)",
                               service_add_cpu),
                              ("ovs-vsctl add-port: its process", CPU["vsctl add-port"])):
            print(f"  {name:<54} {statistics.fmean(samples) * 1000:6.2f} ms")
        print(f"CNI service process RSS after {total * 2} ADD/DEL cycles: {rss_mb:.1f} MiB")
        return ColdResult(add_installed, add_console, vsctl_p50, del_installed, vsctl_del,
                          add_shim)

    def leaks(self) -> list[str]:
        """Nothing of numanet left anywhere (asked while the service still runs)."""
        ovs, bridge = self.node.ovs, self.node.bridge
        leaks: list[str] = []
        numanet_ports = ovs.vsctl("--format=json", "find", "Port",
                                  "external_ids:numanet-owner=numanet", wait=False)
        if json.loads(numanet_ports)["data"]:
            leaks.append("numanet ports on OVS")
        if ovs.vsctl("list-ports", bridge, wait=False).strip():
            leaks.append(f"ports on {bridge}: {ovs.vsctl('list-ports', bridge, wait=False)}")
        leftovers = [str(p) for p in self.run_dir.glob("s/*/numanet.json")]
        leftovers += [str(p) for p in (self.run_dir / "cni").glob("*.json")]
        leftovers += [str(p) for p in self.devinfo_root.rglob("*.json")] \
            if self.devinfo_root.exists() else []
        if leftovers:
            leaks.append(f"files: {leftovers[:5]}")
        lease_dir = self.ipam_dir / NETWORK
        leases = [p.name for p in lease_dir.iterdir()
                  if p.name != "lock" and not p.name.startswith("last_reserved_ip")] \
            if lease_dir.is_dir() else []
        if leases:
            leaks.append(f"IPAM leases: {leases[:5]}")
        print(f"leak check (ports, container files, records, IPAM leases): "
              f"{'none' if not leaks else '; '.join(leaks)}")
        return leaks


def run_cold(args: argparse.Namespace, node: pod_path.Node) -> ColdResult:
    phase = ColdPhase(args, node)
    try:
        phase.start()
        result = phase.report(*phase.measure())
        result.leaks = phase.leaks()
        return result
    finally:
        phase.stop()


# -- the run --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200,
                        help="measured cycles of each series (default 200)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="warm-up cycles of the cold path (default 5)")
    parser.add_argument("--pod-warmup", type=int, default=3,
                        help="warm-up pods of each pod-path series (default 3)")
    parser.add_argument("--sandbox-gap-ms", type=float, default=100.0, metavar="MS",
                        help="pod path: wait between Allocate and CNI ADD, standing in for "
                             "the kubelet's volume setup, the runtime's netns and pause "
                             "container and Multus' API reads (default 100, short of a real "
                             "node's)")
    parser.add_argument("--pmd-maxsleep", type=int, default=10000, metavar="US",
                        help="OVS other_config:pmd-maxsleep (default 10000; 0 makes the PMD "
                             "thread spin a whole core, only for a comparison)")
    parser.add_argument("--plugin-python", default=HOST_PYTHON,
                        help="interpreter of the installed plugin's #! line (default: the "
                             "host's python3, as deploy/image/install-cni.sh picks it)")
    parser.add_argument("--no-relay", action="store_true",
                        help="install the Python shim as the plugin even when the compiled "
                             "relay is built")
    parser.add_argument("--agent", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--db", "--bridge", "--run-dir", "--pod-resources", "--devinfo-root",
                   "--devices"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    return parser.parse_args()


def print_verdicts(cold: ColdResult, pods: pod_path.PodPathResult, gap_ms: float) -> None:
    """Each path against the ovs-vsctl add-port timed beside it."""
    verdict("cold ADD, no port prepared, installed plugin", cold.add_installed, cold.vsctl)
    verdict("cold ADD, no port prepared, installed Python shim", cold.add_shim, cold.vsctl)
    verdict("DEL, installed plugin", cold.del_installed, cold.vsctl_del, "DEL", "del-port")
    verdict("cold ADD, no port prepared, console script", cold.add_console, cold.vsctl)
    verdict(f"pod path, gap {gap_ms:.0f} ms, prepareAtAllocate on: what a pod gets",
            pods.add_p50, pods.vsctl_p50)
    verdict("pod path, gap 0, prepareAtAllocate on: worst case", pods.add_zero_gap_p50,
            pods.vsctl_p50)
    if pods.add_unprepared_p50 is not None:
        verdict(f"pod path, gap {gap_ms:.0f} ms, prepareAtAllocate off (vs agent run 1's)",
                pods.add_unprepared_p50, pods.vsctl_p50)


def main() -> int:
    args = parse_args()
    if args.agent:
        return agent_main(args)
    if args.cycles < 200:
        print(f"note: {args.cycles} cycles (the target is judged over at least 200)")

    from demo.private_ovs import INSTALL_HINT, PrivateOvs, missing_ovs_parts

    missing = missing_ovs_parts()
    if missing or not os.access(HOST_LOCAL, os.X_OK):
        print(f"cannot run: missing {missing or HOST_LOCAL}; {INSTALL_HINT} "
              "containernetworking-plugins")
        return 2
    from cni.install import install

    try:
        from cni.install import find_relay
    except ImportError:  # a tree before the relay (a base-line run)
        def find_relay(choice: str | None = None) -> Path | None:
            return None

    base = Path(tempfile.mkdtemp(prefix="nnbc-", dir="/tmp"))
    # The run directories (slot sockets, attachment records, numanet.json) and Multus's
    # device-info directory live under /run on a node, which is tmpfs; IPAM leases stay on
    # disk (host-local's /var/lib/cni/networks). A run dir on this machine's ext4 /tmp
    # would time ext4's flush-on-rename instead of numanet (about 2.5 ms per record write).
    volatile = Path(tempfile.mkdtemp(prefix="nnbc-", dir=TMPFS))
    netns_name = f"nnbench-{os.getpid()}"
    ovs = PrivateOvs(base / "ovs", pmd_maxsleep_us=args.pmd_maxsleep)
    started = time.monotonic()
    try:
        ovs.start()
        ovs.vsctl("add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev")
        subprocess.run(["ip", "netns", "add", netns_name], check=True)
        relay = find_relay("none" if args.no_relay else "auto")
        node = pod_path.Node(ovs=ovs, bridge=BRIDGE, netns_name=netns_name,
                             plugin=install(base / "bin" / "numanet", args.plugin_python,
                                            **({"relay": relay} if relay else {})),
                             shim=install(base / "shim" / "numanet", args.plugin_python),
                             work_dir=base, volatile_dir=volatile)
        print(f"numanet CNI bench: {args.cycles} cycles per series (+{args.warmup} cold, "
              f"+{args.pod_warmup} pod warm-up), {len(os.sched_getaffinity(0))} CPUs, "
              f"OVS {ovs.vsctl('--version').split()[3]} (pmd-maxsleep {args.pmd_maxsleep} us), "
              f"load average {os.getloadavg()[0]:.1f}")
        cold = run_cold(args, node)
        cold_done = time.monotonic()
        pods = pod_path.run(node, args.sandbox_gap_ms, args.cycles, args.pod_warmup)
        done = time.monotonic()
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine "
              f"stretches every figure); {done - started:.0f} s in all (cold path "
              f"{cold_done - started:.0f} s, pod path {done - cold_done:.0f} s)")
        print_verdicts(cold, pods, args.sandbox_gap_ms)
        return 1 if cold.leaks or pods.leaks else 0
    finally:
        subprocess.run(["ip", "netns", "delete", netns_name], check=False, capture_output=True)
        ovs.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(volatile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
