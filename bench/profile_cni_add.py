"""Where a CNI ADD's (and DEL's) time goes, phase by phase (the companion of bench_cni.py).

The same parts as bench_cni.py (private OVS-DPDK, host-local IPAM in a network namespace,
the pod-resources stand-in, the shim installed by cni.install and exec'd per call), but
the CNI service runs in this process so that its steps can be timed: each step is wrapped
by name and its wall time recorded per ADD. Printed: the median (and p90) of each step
over the ADDs, the moments the service starts and ends the call as seen from the shim's
exec, and the CPU time the shim and the agent side use per ADD, which moves far less with
the machine's load than wall time does.

Steps overlap: IPAM runs in a worker beside the vSwitch plug, and the plug's own steps
(commit, wait for ovs-vswitchd) are inside "plug".

With ``--prepared`` each ADD finds its port prepared, as a pod's ADD does after Allocate
(cni/prepare.py, run here before the shim is exec'd): the plug is then the claim.

    .venv/bin/python bench/profile_cni_add.py [--adds 100] [--prepared]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import bench_cni  # noqa: E402

from deviceplugin import naming  # noqa: E402

Events = list[tuple[str, float, float]]
_events: Events = []
_events_lock = threading.Lock()


def _timed(owner: Any, attr: str, label: str) -> None:
    """Record every call of ``owner.attr`` as ``label``; skipped when it does not exist."""
    original: Callable[..., Any] | None = getattr(owner, attr, None)
    if original is None:
        print(f"note: {getattr(owner, '__name__', owner)}.{attr} not found, not timed")
        return

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            with _events_lock:
                _events.append((label, started, time.perf_counter()))

    setattr(owner, attr, wrapper)


def _instrument() -> None:
    import cni.commands
    import cni.container_config
    import cni.ipam
    import cni.podresources
    import cni.records
    from vswitch.ovs import backend

    _timed(cni.podresources.PodResourcesClient, "check_allocated", "kubelet pod-resources check")
    _timed(cni.commands, "take_over", "take-over check (records + ports)")
    _timed(cni.records.RecordStore, "put", "attachment record writes (2)")
    _timed(cni.ipam.IpamDelegate, "add", "IPAM ADD (exec host-local, in a worker)")
    _timed(cni.commands, "write_container_config", "numanet.json write")
    _timed(backend.OvsVSwitch, "plug", "plug (all of it)")
    _timed(backend.OvsVSwitch, "_commit", "  plug: OVSDB transaction")
    _timed(backend.OvsVSwitch, "_claim", "  plug: claim of the prepared port")
    _timed(backend.OvsVSwitch, "_check_applied", "  plug: wait for ovs-vswitchd to apply")
    import cni.teardown

    _timed(cni.ipam.IpamDelegate, "delete", "IPAM DEL (exec host-local, in a worker)")
    _timed(cni.teardown, "find_port", "port lookup")
    _timed(backend.OvsVSwitch, "unplug", "unplug (all of it)")
    _timed(backend.OvsVSwitch, "_settle", "unplug settled (vswitchd applied; background)")
    _timed(cni.teardown, "remove_file", "container file removals")
    _timed(cni.records.RecordStore, "delete", "attachment record removal")


def _process_cpu() -> float:
    """CPU seconds of this process and its reaped children (the shim, the IPAM plugin)."""
    with open("/proc/self/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _run(cmd: list[str], env: dict[str, str], stdin: bytes) -> tuple[int, bytes, float]:
    """(exit code, stdout, CPU seconds of that process alone)."""
    code, out, _, cpu = bench_cni.exec_call(cmd, env, stdin, stderr=subprocess.DEVNULL)
    return code, out, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--plugin-python", default=bench_cni.HOST_PYTHON)
    parser.add_argument("--no-relay", action="store_true",
                        help="install the Python shim even when the compiled relay is built")
    parser.add_argument("--prepared", action="store_true",
                        help="prepare each ADD's port first, as the agent does at Allocate")
    args = parser.parse_args()

    from demo.private_ovs import INSTALL_HINT, PrivateOvs, missing_ovs_parts

    if missing_ovs_parts() or not os.access(bench_cni.HOST_LOCAL, os.X_OK):
        print(f"cannot run: {INSTALL_HINT} containernetworking-plugins")
        return 2
    _instrument()
    from cni.install import find_relay, install
    from cni.prepare import prepare_port
    from cni.service import start_agent_service
    from demo.kubelet_standin.podresources import PodAllocation, PodResourcesStandIn
    from vswitch.ovs.backend import OvsVSwitch

    base = Path(tempfile.mkdtemp(prefix="nnpa-", dir="/tmp"))
    volatile = Path(tempfile.mkdtemp(prefix="nnpa-", dir=bench_cni.TMPFS))
    run_dir = volatile / "run"
    netns = f"nnprof-{os.getpid()}"
    ovs = PrivateOvs(base / "ovs")
    cleanup: list[Callable[[], Any]] = []
    try:
        ovs.start()
        bridge = "nnprof"
        ovs.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
        ids = [naming.slot_device_id(bench_cni.POOL, 0, i) for i in range(bench_cni.DEVICES)]
        for device_id in ids:
            naming.slot_dir(run_dir, device_id).mkdir(parents=True, mode=0o700)
        kubelet = PodResourcesStandIn(
            base / "kubelet.sock",
            [PodAllocation("bench", f"pod-{i}", "app", bench_cni.RESOURCE, (d,), (0,))
             for i, d in enumerate(ids)]).start()
        cleanup.append(kubelet.stop)
        subprocess.run(["ip", "netns", "add", netns], check=True)
        cleanup.append(lambda: subprocess.run(["ip", "netns", "delete", netns], check=False))
        switch = OvsVSwitch(ovs.db, bridge, timeout=10.0)
        switch.connect()
        cleanup.append(switch.close)
        service = start_agent_service(slots=bench_cni.BenchSlots(run_dir),
                                      vswitches=lambda: {"ovs": switch}, run_dir=run_dir,
                                      pod_resources_socket=kubelet.socket,
                                      devinfo_root=volatile / "devinfo")
        cleanup.append(service.stop)
        # The service's own entry point, timed from outside so the shim's share shows.
        call = service._call

        def timed_call(*call_args: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*call_args)
            finally:
                with _events_lock:
                    _events.append(("service call (run_call)", started, time.perf_counter()))

        service._call = timed_call
        relay = find_relay("none" if args.no_relay else "auto")
        plugin = install(base / "bin" / "numanet", python=args.plugin_python, relay=relay)
        ipam = {"type": "host-local", "dataDir": str(base / "ipam"),
                "ranges": [[{"subnet": "10.99.0.0/24"}]]}
        rows: list[dict[str, float]] = []
        del_rows: list[dict[str, float]] = []
        print(f"profiling {args.adds} ADDs (+{args.warmup} warm-up), plugin "
              f"{'the compiled relay' if relay else f'#!{args.plugin_python} -IS'}, ports "
              f"{'prepared' if args.prepared else 'made'} "
              f"at ADD, load average {os.getloadavg()[0]:.1f}")
        slots = bench_cni.BenchSlots(run_dir)
        for i in range(args.warmup + args.adds):
            for command in ("ADD", "DEL"):
                env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": command,
                       "NUMANET_CNI_SOCKET": str(naming.cni_socket(run_dir)),
                       "CNI_CONTAINERID": f"prof{i:05d}", "CNI_NETNS": f"/var/run/netns/{netns}",
                       "CNI_IFNAME": "net1", "CNI_PATH": "/usr/lib/cni",
                       "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;"
                                   f"K8S_POD_NAME=pod-{i % bench_cni.DEVICES}"}
                conf = {"cniVersion": "1.1.0", "name": "prof-net", "type": "numanet",
                        "deviceID": ids[i % bench_cni.DEVICES], "ipam": ipam}
                if command == "ADD" and args.prepared:
                    slot = slots.slot(ids[i % bench_cni.DEVICES])
                    assert slot is not None
                    if prepare_port(service.context, slot) is None:
                        raise RuntimeError(f"port of {slot.device_id} not prepared")
                with _events_lock:
                    _events.clear()
                before = _process_cpu()
                started = time.perf_counter()
                code, out, shim_cpu = _run([str(plugin)], env, json.dumps(conf).encode())
                ended = time.perf_counter()
                agent_cpu = _process_cpu() - before - shim_cpu
                if code != 0:
                    raise RuntimeError(f"{command} failed: {out.decode()[:300]}")
                if i < args.warmup:
                    continue
                if command == "DEL":
                    with _events_lock:
                        events = list(_events)
                    name = f"vd{i % bench_cni.DEVICES}"
                    vsctl = ["ovs-vsctl", f"--db={ovs.db}"]
                    _run([*vsctl, "add-port", bridge, name, "--", "set", "Interface", name,
                          "type=dpdkvhostuserclient",
                          f"options:vhost-server-path={volatile}/{name}.sock"], ovs.env, b"")
                    began = time.perf_counter()
                    _run([*vsctl, "del-port", bridge, name], ovs.env, b"")
                    row = {"DEL, wall clock (plugin exec to exit)": ended - started,
                           "ovs-vsctl del-port, wall clock (same run)":
                               time.perf_counter() - began}
                    for label, begin, end in events:
                        row[label] = row.get(label, 0.0) + end - begin
                        if label == "service call (run_call)":
                            row["  plugin exec until the service starts the call"] = \
                                begin - started
                    del_rows.append(row)
                    continue
                name = f"vs{i % bench_cni.DEVICES}"
                vsctl = ["ovs-vsctl", f"--db={ovs.db}"]
                began = time.perf_counter()
                _, _, vsctl_cpu = _run([*vsctl, "add-port", bridge, name, "--", "set",
                                        "Interface", name, "type=dpdkvhostuserclient",
                                        f"options:vhost-server-path={volatile}/{name}.sock"],
                                       ovs.env, b"")
                vsctl_wall = time.perf_counter() - began
                _run([*vsctl, "del-port", bridge, name], ovs.env, b"")
                with _events_lock:
                    events = list(_events)
                row = {"ADD, wall clock (shim exec to exit)": ended - started,
                       "CPU: shim process": shim_cpu,
                       "CPU: agent side (service, kubelet stand-in, host-local)": agent_cpu,
                       "ovs-vsctl add-port, wall clock (same run)": vsctl_wall,
                       "CPU: ovs-vsctl add-port process": vsctl_cpu}
                for label, begin, end in events:
                    row[label] = row.get(label, 0.0) + end - begin
                    if label == "service call (run_call)":
                        row["  shim exec until the service starts the call"] = begin - started
                        row["  service answer until the shim has exited"] = ended - end
                rows.append(row)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        for title, table in (("ADD", rows), ("DEL (the same attachments)", del_rows)):
            print(f"{title}:")
            labels = list(dict.fromkeys(label for row in table for label in row))
            for label in labels:
                ms = sorted(row.get(label, 0.0) * 1000 for row in table)
                print(f"  {label:<54} p50={statistics.median(ms):7.2f} ms  "
                      f"p90={ms[int(0.9 * (len(ms) - 1))]:7.2f} ms")
        return 0
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                print(f"cleanup: {exc}")
        ovs.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(volatile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
