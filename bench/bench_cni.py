"""CNI ADD and DEL latency, the shim exec included, beside ovs-vsctl add-port/del-port.

Everything real except the kubelet: a private OVS-DPDK, host-local IPAM, a network
namespace, the CNI service in its own process (as in the agent: long-lived ovsdbapp
connection, kubelet pod-resources check over gRPC), and the shim executed per call
exactly as a runtime does. Each cycle runs, against the same OVS and bridge:
  CNI ADD + DEL through the installed plugin (python -m cni.install: #!python3 -IS launcher
                                              + precompiled shim, the host's python3 as
                                              install-cni.sh picks it)
  CNI ADD + DEL through the console script   (.venv/bin/numanet-cni, python with site)
  ovs-vsctl add-port + del-port              (same port type: dpdkvhostuserclient)
Then: CPU time per call of the plugin, the agent and ovs-vsctl, the service process's RSS,
and a leak check (ports, files, records, IPAM leases). The run directory is on tmpfs, as
/run is on a node. Target: CNI ADD p50 no slower than one ovs-vsctl add-port.
bench/profile_cni_add.py splits an ADD into its steps.

    .venv/bin/python bench/bench_cni.py [--cycles 200] [--pmd-maxsleep US]
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

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


# -- the service process ----------------------------------------------------------------------


def agent_main(args: argparse.Namespace) -> int:
    """The CNI service alone, as the agent starts it; stops on SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format="agent %(levelname)s %(message)s")
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


# -- measuring --------------------------------------------------------------------------------


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


# CPU time of each exec'd process (shim, ovs-vsctl), by what was timed: unlike wall
# clock it hardly moves with the load of other work on the machine.
CPU: dict[str, list[float]] = {}


def exec_call(cmd: list[str], env: dict[str, str], stdin: bytes = b"",
              stderr: int = subprocess.STDOUT) -> tuple[int, bytes, float, float]:
    """Run ``cmd`` as a runtime would: (exit code, output, wall seconds, CPU seconds of
    that process alone, from its own rusage)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=stderr, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)  # reaped here, for its own rusage
    elapsed = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    return code, out, elapsed, usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict[str, str], stdin: bytes = b"",
          cpu_key: str | None = None) -> tuple[float, str]:
    """Run ``cmd`` as a runtime would; its wall time and output (stdout and stderr)."""
    code, out, elapsed, cpu = exec_call(cmd, env, stdin)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {code}): {out.decode()[:600]}")
    if cpu_key is not None:
        CPU.setdefault(cpu_key, []).append(cpu)
    return elapsed, out.decode()


def row(name: str, samples: list[float]) -> tuple[float, float]:
    ms = [s * 1000 for s in samples]
    p50, p99 = percentile(ms, 0.50), percentile(ms, 0.99)
    print(f"  {name:<44} n={len(ms):<4} p50={p50:7.2f} ms  p99={p99:7.2f} ms  "
          f"mean={statistics.fmean(ms):7.2f} ms")
    return p50, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--pmd-maxsleep", type=int, default=10000, metavar="US",
                        help="OVS other_config:pmd-maxsleep (default 10000; 0 makes the PMD "
                             "thread spin a whole core, only for a comparison)")
    parser.add_argument("--plugin-python", default=HOST_PYTHON,
                        help="interpreter of the installed plugin's #! line (default: the "
                             "host's python3, as deploy/image/install-cni.sh picks it)")
    parser.add_argument("--agent", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--db", "--bridge", "--run-dir", "--pod-resources", "--devinfo-root"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent:
        return agent_main(args)
    if args.cycles < 200:
        print(f"note: {args.cycles} cycles (the target is judged over at least 200)")

    from vswitch.ovs.private import INSTALL_HINT, PrivateOvs, missing_ovs_parts

    missing = missing_ovs_parts()
    if missing or not os.access(HOST_LOCAL, os.X_OK):
        print(f"cannot run: missing {missing or HOST_LOCAL}; {INSTALL_HINT} "
              "containernetworking-plugins")
        return 2
    import psutil

    from cni.install import install
    from deviceplugin.kubelet_standin.podresources import PodAllocation, PodResourcesStandIn

    base = Path(tempfile.mkdtemp(prefix="nnbc-", dir="/tmp"))
    # The run directory (slot sockets, attachment records, numanet.json) and Multus's
    # device-info directory live under /run on a node, which is tmpfs; IPAM leases stay on
    # disk (host-local's /var/lib/cni/networks). A run dir on this machine's ext4 /tmp
    # would time ext4's flush-on-rename instead of numanet (about 2.5 ms per record write).
    volatile = Path(tempfile.mkdtemp(prefix="nnbc-", dir=TMPFS))
    run_dir, devinfo_root = volatile / "run", volatile / "devinfo"
    ipam_dir = base / "ipam"
    netns_name = f"nnbench-{os.getpid()}"
    bridge = "nnbench"
    ovs = PrivateOvs(base / "ovs", pmd_maxsleep_us=args.pmd_maxsleep)
    agent: subprocess.Popen[str] | None = None
    kubelet: PodResourcesStandIn | None = None
    direct = None
    leaks: list[str] = []
    try:
        ovs.start()
        ovs.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
        device_ids = [naming.slot_device_id(POOL, 0, i) for i in range(DEVICES)]
        for device_id in device_ids:  # what Allocate prepares
            naming.slot_dir(run_dir, device_id).mkdir(parents=True, mode=0o700)
        vsctl_dir = volatile / "vsctl"
        vsctl_dir.mkdir()
        kubelet = PodResourcesStandIn(
            base / "kubelet" / "pod-resources" / "kubelet.sock",
            [PodAllocation("bench", f"pod-{i}", "app", RESOURCE, (d,), (0,))
             for i, d in enumerate(device_ids)]).start()
        subprocess.run(["ip", "netns", "add", netns_name], check=True)
        agent = subprocess.Popen(
            [sys.executable, __file__, "--agent", "--db", ovs.db, "--bridge", bridge,
             "--run-dir", str(run_dir), "--pod-resources", str(kubelet.socket),
             "--devinfo-root", str(devinfo_root)], stdout=subprocess.PIPE, text=True)
        assert agent.stdout is not None
        if agent.stdout.readline().strip() != "ready":
            raise RuntimeError("the CNI service process did not start")
        plugin = install(base / "bin" / "numanet", python=args.plugin_python)
        socket_path = str(naming.cni_socket(run_dir))
        ipam = {"type": "host-local", "dataDir": str(ipam_dir),
                "ranges": [[{"subnet": "10.99.0.0/24"}]]}

        def cni(exe: Path, command: str, i: int, cpu_key: str | None = None) -> float:
            device_id = device_ids[i % DEVICES]
            env = {"PATH": "/usr/bin:/bin", "NUMANET_CNI_SOCKET": socket_path,
                   "CNI_COMMAND": command, "CNI_CONTAINERID": f"bench{i:05d}",
                   "CNI_NETNS": f"/var/run/netns/{netns_name}", "CNI_IFNAME": "net1",
                   "CNI_PATH": "/usr/lib/cni",
                   "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;"
                               f"K8S_POD_NAME=pod-{i % DEVICES}"}
            conf = {"cniVersion": "1.1.0", "name": NETWORK, "type": "numanet",
                    "deviceID": device_id, "ipam": ipam}
            elapsed, _ = timed([str(exe)], env, json.dumps(conf).encode(), cpu_key)
            return elapsed

        vsctl_env = ovs.env
        vsctl = ["ovs-vsctl", f"--db={ovs.db}"]

        def vsctl_add(i: int, cpu_key: str | None = None) -> float:
            name = f"vs{i % DEVICES}"
            return timed([*vsctl, "add-port", bridge, name, "--", "set", "Interface", name,
                          "type=dpdkvhostuserclient",
                          f"options:vhost-server-path={vsctl_dir}/{name}.sock"], vsctl_env,
                         cpu_key=cpu_key)[0]

        def vsctl_del(i: int) -> float:
            return timed([*vsctl, "del-port", bridge, f"vs{i % DEVICES}"], vsctl_env)[0]

        # For the breakdown: the plug alone, as the service does it (one ovsdbapp
        # transaction, then waiting for ovs-vswitchd to apply it, as ovs-vsctl waits).
        from vswitch.api import Owner, PortSpec
        from vswitch.ovs.backend import OvsVSwitch

        direct = OvsVSwitch(ovs.db, bridge, timeout=10.0)  # the bench's own connection
        direct.connect()
        direct_dir = volatile / "direct"
        direct_dir.mkdir()

        def direct_plug(i: int) -> float:
            spec = PortSpec(device_id=f"direct-n0-{i % DEVICES:03d}", kind="vhost-user",
                            container_role="server", socket_path=f"{direct_dir}/{i % DEVICES}",
                            network=bridge, owner=Owner("bench", "direct", f"d{i}", "net1"))
            start = time.perf_counter()
            direct.plug(spec)
            elapsed = time.perf_counter() - start
            direct.unplug(spec.device_id)
            return elapsed

        results: dict[str, list[float]] = {k: [] for k in (
            "add_console", "del_console", "add_installed", "del_installed", "vsctl_add",
            "vsctl_del", "version_console", "version_installed", "python_floor", "plug")}
        version_env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "VERSION"}
        total = args.warmup + args.cycles
        print(f"numanet CNI bench: {args.cycles} cycles (+{args.warmup} warm-up), "
              f"{len(os.sched_getaffinity(0))} CPUs, OVS {ovs.vsctl('--version').split()[3]} "
              f"(pmd-maxsleep {args.pmd_maxsleep} us), load average "
              f"{os.getloadavg()[0]:.1f}")
        agent_process = psutil.Process(agent.pid)

        def agent_cpu() -> float:
            times = agent_process.cpu_times()  # children: the IPAM plugin it ran
            return float(times.user + times.system + times.children_user
                         + times.children_system)

        agent_add_cpu: list[float] = []
        for i in range(total):
            measured = i >= args.warmup
            before = agent_cpu()
            add_installed = cni(plugin, "ADD", 3 * i + 1, "shim ADD" if measured else None)
            if measured:
                agent_add_cpu.append(agent_cpu() - before)
            sample = {
                "add_installed": add_installed,
                "del_installed": cni(plugin, "DEL", 3 * i + 1),
                "add_console": cni(SHIM, "ADD", 3 * i),
                "del_console": cni(SHIM, "DEL", 3 * i),
                "vsctl_add": vsctl_add(i, "vsctl add-port" if measured else None),
                "vsctl_del": vsctl_del(i),
                "version_console": timed([str(SHIM)], version_env)[0],
                "version_installed": timed([str(plugin)], version_env)[0],
                "python_floor": timed([args.plugin_python, "-IS", "-c", "pass"],
                                      version_env)[0],
                "plug": direct_plug(i),
            }
            if measured:
                for key, value in sample.items():
                    results[key].append(value)

        rss_mb = psutil.Process(agent.pid).memory_info().rss / 2**20
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine "
              "stretches every figure)")
        print("latency (wall clock per call, process exec included):")
        print(f"  (installed plugin: #!{args.plugin_python} -IS)")
        add_installed, _ = row("CNI ADD, installed plugin", results["add_installed"])
        row("CNI DEL, installed plugin", results["del_installed"])
        add_console, _ = row("CNI ADD, console script (.venv/bin/numanet-cni)",
                             results["add_console"])
        row("CNI DEL, console script", results["del_console"])
        vsctl_p50, _ = row("ovs-vsctl add-port (dpdkvhostuserclient)", results["vsctl_add"])
        row("ovs-vsctl del-port", results["vsctl_del"])
        print("where the time goes:")
        row("ovsdbapp plug in-process (txn + vswitchd apply)", results["plug"])
        row(f"interpreter start: {args.plugin_python} -IS -c pass", results["python_floor"])
        row("VERSION, installed plugin (shim alone + json)", results["version_installed"])
        row("VERSION, console script (shim alone + json)", results["version_console"])
        print("CPU time per call, mean (user+sys, sampled by the kernel per tick, so only the "
              "mean means much; it moves far less with the machine's load than wall time):")
        for name, samples in (("CNI ADD: the installed plugin's process", CPU["shim ADD"]),
                              ("CNI ADD: the agent (service, OVSDB client, host-local)",
                               agent_add_cpu),
                              ("ovs-vsctl add-port: its process", CPU["vsctl add-port"])):
            print(f"  {name:<54} {statistics.fmean(samples) * 1000:6.2f} ms")
        print(f"CNI service process RSS after {total * 2} ADD/DEL cycles: {rss_mb:.1f} MiB")

        # Leak check: nothing of numanet left anywhere.
        numanet_ports = ovs.vsctl("--format=json", "find", "Port",
                                  "external_ids:numanet-owner=numanet", wait=False)
        if json.loads(numanet_ports)["data"]:
            leaks.append("numanet ports on OVS")
        if ovs.vsctl("list-ports", bridge, wait=False).strip():
            leaks.append(f"ports on {bridge}: {ovs.vsctl('list-ports', bridge, wait=False)}")
        leftovers = [str(p) for p in run_dir.glob("s/*/numanet.json")]
        leftovers += [str(p) for p in (run_dir / "cni").glob("*.json")]
        leftovers += [str(p) for p in devinfo_root.rglob("*.json")] if devinfo_root.exists() else []
        if leftovers:
            leaks.append(f"files: {leftovers[:5]}")
        leases = [p.name for p in (ipam_dir / NETWORK).iterdir()
                  if p.name != "lock" and not p.name.startswith("last_reserved_ip")] \
            if (ipam_dir / NETWORK).is_dir() else []
        if leases:
            leaks.append(f"IPAM leases: {leases[:5]}")
        print(f"leak check (ports, container files, records, IPAM leases): "
              f"{'none' if not leaks else '; '.join(leaks)}")
        for name, p50 in (("installed plugin", add_installed), ("console script", add_console)):
            verdict = "OK" if p50 <= vsctl_p50 else "MISSED"
            print(f"target CNI ADD p50 <= ovs-vsctl add-port p50 ({name}): "
                  f"{p50:.2f} ms vs {vsctl_p50:.2f} ms  {verdict}")
        return 1 if leaks else 0
    finally:
        if direct is not None:
            direct.close()
        if agent is not None:
            agent.terminate()
            agent.wait(30)
        if kubelet is not None:
            kubelet.stop()
        subprocess.run(["ip", "netns", "delete", netns_name], check=False, capture_output=True)
        ovs.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(volatile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
