"""VPP backend cost per slot: plug, unplug, ports() and the replay after a VPP restart.

There is no VPP on this machine, so the peer is the test suite's stand-in VPP
(tests/vswitch/vpp_fake.py) in its own process: the real vpp_papi client, the real
socket transport and message encoding, VPP's message definitions, but none of VPP's own
work (a real VPP answers these calls in tens of microseconds each). What this measures is
numanet's side: how many API round trips a plug takes and what they cost in Python.

    .venv/bin/python bench/bench_vpp.py [--slots 128]
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vswitch.api import Owner, PortSpec  # noqa: E402
from vswitch.vpp import ReplayReport, VppVSwitch  # noqa: E402
from vswitch.vpp.connection import VppConnection  # noqa: E402

STAND_IN = """
import signal, sys, time
sys.path.insert(0, sys.argv[2])
from tests.vswitch.vpp_fake import FakeVpp
fake = FakeVpp(sys.argv[1]); fake.start()
restart = []
signal.signal(signal.SIGUSR1, lambda *_: restart.append(1))
print("ready", flush=True)
while True:
    time.sleep(0.01)
    if restart:
        restart.clear(); fake.restart()
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def line(name: str, values: list[float]) -> str:
    return (
        f"{name:<28} n={len(values):<4} p50={pct(values, 0.5):7.2f} ms  "
        f"p99={pct(values, 0.99):7.2f} ms  mean={statistics.mean(values) * 1000:7.2f} ms"
    )


def count_calls() -> Counter[str]:
    """Count every API request the backend sends (wraps the one function they all use)."""
    counter: Counter[str] = Counter()
    original = VppConnection._send

    def counting(self: VppConnection, name: str, *args: Any) -> Any:
        counter[name] += 1
        return original(self, name, *args)

    VppConnection._send = counting  # type: ignore[method-assign]
    return counter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=128)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="nnvppb-", dir="/tmp"))
    api_socket = str(workdir / "api.sock")
    stand_in = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, api_socket, str(ROOT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stand_in.stdout is not None and stand_in.stdout.readline().strip() == "ready"
        calls = count_calls()
        backend = VppVSwitch(api_socket, watch_interval=0.05, backoff=(0.02, 0.5))
        t0 = time.perf_counter()
        backend.connect()
        connect = time.perf_counter() - t0
        specs = []
        for i in range(args.slots):
            kind = "memif" if i % 2 == 0 else "vhost-user"
            device_id = f"{'memif' if kind == 'memif' else 'vhost'}-b-n{i % 2}-{i:03d}"
            slot = workdir / "s" / device_id
            slot.mkdir(parents=True)
            specs.append(
                PortSpec(
                    device_id=device_id,
                    kind=kind,
                    container_role="slave" if kind == "memif" else "client",
                    socket_path=str(slot / "sock"),
                    network=f"net{i % 4}",
                    owner=Owner("bench", f"pod{i}"),
                )
            )
        plug: dict[str, list[float]] = {"memif": [], "vhost-user": []}
        calls.clear()
        for spec in specs:
            t0 = time.perf_counter()
            backend.plug(spec)
            plug[spec.kind].append(time.perf_counter() - t0)
        plug_calls = sum(calls.values()) / len(specs)
        listing = []
        for _ in range(10):
            t0 = time.perf_counter()
            ports = backend.ports()
            listing.append(time.perf_counter() - t0)
        assert len(ports) == len(specs)

        reports: queue.Queue[ReplayReport] = queue.Queue()
        backend.on_reconnect(reports.put)
        t0 = time.perf_counter()
        stand_in.send_signal(signal.SIGUSR1)
        report = reports.get(timeout=120)
        replay = time.perf_counter() - t0
        assert len(report.replugged) == len(specs) and not report.failed

        unplug = []
        calls.clear()
        for spec in specs:
            t0 = time.perf_counter()
            assert backend.unplug(spec.device_id)
            unplug.append(time.perf_counter() - t0)
        unplug_calls = sum(calls.values()) / len(specs)
        backend.close()

        print(f"VPP backend against the stand-in VPP (own process), {len(specs)} slots")
        print(f"{'connect (bootstrap API)':<28} {connect * 1000:.2f} ms")
        print(line("plug memif", plug["memif"]))
        print(line("plug vhost-user", plug["vhost-user"]))
        print(line("unplug", unplug))
        print(line(f"ports() with {len(specs)} slots", listing))
        print(f"{'replay after VPP restart':<28} {replay * 1000:.1f} ms for {len(specs)} slots")
        print(f"API requests per plug {plug_calls:.1f}, per unplug {unplug_calls:.1f}")
        print(f"bench process RSS {_rss_mb():.1f} MiB")
        return 0
    finally:
        stand_in.terminate()
        stand_in.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for row in status:
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    sys.exit(main())
