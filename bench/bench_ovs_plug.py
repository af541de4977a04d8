"""Plug + unplug latency of the OVS backend against ``ovs-vsctl add-port`` / ``del-port``.

Runs on a private OVS-DPDK (no hugepages) it starts and stops itself. Both sides wait for
ovs-vswitchd to apply each change (ovs-vsctl's default, the backend's cur_cfg wait) and
create the same port: a dpdkvhostuserclient with its socket path and external_ids. The
backend's unplug answers before vswitchd applied it (that settles in the background): its
answer and the moment vswitchd was done are both shown, and the cycle ends at the latter.

    .venv/bin/python bench/bench_ovs_plug.py [--cycles 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.private_ovs import PrivateOvs  # noqa: E402
from vswitch.api import Owner, PortSpec  # noqa: E402
from vswitch.ovs.backend import OvsVSwitch  # noqa: E402


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms  "
        f"max {ordered[-1] * 1000:6.1f} ms"
    )


def _bench_backend(ovs: PrivateOvs, slots: Path, cycles: int) -> dict[str, list[float]]:
    switch = OvsVSwitch(ovs.db, "br-bench", timeout=10)
    start = time.perf_counter()
    switch.connect()
    connect = time.perf_counter() - start
    times: dict[str, list[float]] = {"plug": [], "unplug": [], "applied": [], "cycle": [],
                                     "connect": [connect]}
    owner = Owner("bench", "pod", "c" * 64, "net1")
    try:
        for i in range(cycles):
            device_id = f"bench-n0-{i % 8:03d}"
            slot = slots / device_id
            slot.mkdir(exist_ok=True)
            spec = PortSpec(
                device_id=device_id,
                kind="vhost-user",
                container_role="server",
                socket_path=str(slot / "sock"),
                network="br-bench",
                owner=owner,
                mac="02:00:00:00:00:01",
            )
            t0 = time.perf_counter()
            switch.plug(spec)
            t1 = time.perf_counter()
            if not switch.unplug(device_id):
                raise RuntimeError(f"unplug of {device_id} found no port")
            t2 = time.perf_counter()
            # The unplug answers once the port is gone from the database; vswitchd applies
            # it in the background. Wait for that too, as ovs-vsctl del-port does.
            if not switch.settle():
                raise RuntimeError("ovs-vswitchd did not apply the unplug")
            t3 = time.perf_counter()
            times["plug"].append(t1 - t0)
            times["unplug"].append(t2 - t1)
            times["applied"].append(t3 - t1)
            times["cycle"].append(t3 - t0)
        left = [p for p in switch.ports() if p.network == "br-bench"]
        if left:
            raise RuntimeError(f"ports left after the cycles: {left}")
    finally:
        switch.close()
    return times


def _bench_vsctl(ovs: PrivateOvs, slots: Path, cycles: int) -> dict[str, list[float]]:
    ovs.vsctl(
        "--may-exist",
        "add-br",
        "br-vsctl",
        "--",
        "set",
        "bridge",
        "br-vsctl",
        "datapath_type=netdev",
    )
    times: dict[str, list[float]] = {"add-port": [], "del-port": [], "cycle": []}
    base = ["ovs-vsctl", f"--db={ovs.db}", "--timeout=10"]
    for i in range(cycles):
        name = f"vs{i % 8}"
        sock = slots / f"vsctl-{i % 8}.sock"
        add = [
            *base,
            "add-port",
            "br-vsctl",
            name,
            "--",
            "set",
            "Interface",
            name,
            "type=dpdkvhostuserclient",
            f"options:vhost-server-path={sock}",
            "external_ids:numanet-owner=numanet",
            f"external_ids:numanet-device-id={name}",
        ]
        t0 = time.perf_counter()
        subprocess.run(add, check=True, env=ovs.env, capture_output=True)
        t1 = time.perf_counter()
        subprocess.run(
            [*base, "del-port", "br-vsctl", name], check=True, env=ovs.env, capture_output=True
        )
        t2 = time.perf_counter()
        times["add-port"].append(t1 - t0)
        times["del-port"].append(t2 - t1)
        times["cycle"].append(t2 - t0)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="nnbench-", dir="/tmp"))
    slots = base / "s"
    slots.mkdir()
    try:
        with PrivateOvs(base / "ovs") as ovs:
            backend = _bench_backend(ovs, slots, args.cycles)
            vsctl = _bench_vsctl(ovs, slots, args.cycles)
            vswitchd_rss = (
                psutil.Process(ovs.vswitchd_pid).memory_info().rss if (ovs.vswitchd_pid) else 0
            )
        print(
            f"OVS plug/unplug, {args.cycles} cycles, private OVS-DPDK (no hugepages), "
            f"{os.cpu_count()} CPUs"
        )
        print(f"  backend connect        {backend['connect'][0] * 1000:6.1f} ms (once)")
        print(f"  backend plug           {_ms(backend['plug'])}")
        print(f"  backend unplug         {_ms(backend['unplug'])}  (answered)")
        print(f"  backend unplug applied {_ms(backend['applied'])}  (vswitchd done)")
        print(f"  backend plug+unplug    {_ms(backend['cycle'])}  (applied)")
        print(f"  ovs-vsctl add-port     {_ms(vsctl['add-port'])}")
        print(f"  ovs-vsctl del-port     {_ms(vsctl['del-port'])}")
        print(f"  ovs-vsctl add+del      {_ms(vsctl['cycle'])}")
        print(f"  this process RSS       {psutil.Process().memory_info().rss / 2**20:6.1f} MiB")
        print(f"  ovs-vswitchd RSS       {vswitchd_rss / 2**20:6.1f} MiB")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
