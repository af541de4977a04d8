"""A burst of CNI calls: N concurrent ADDs, then N concurrent DELs, beside N concurrent
``ovs-vsctl add-port`` / ``del-port`` on the same bridge, in the same run.

The set-up is bench_cni.py's cold path (private OVS-DPDK, the CNI service alone in its own
process, host-local IPAM in a network namespace, the pod-resources stand-in, the
installed plugin exec'd per call), with N slots. Each round starts the N calls at once
(one thread per call, each exec'ing the plugin) and times every call and the burst as a
whole (first exec to last exit); ovs-vsctl gets the same treatment with the same port
type. Every burst starts on a quiet ovs-vswitchd (a no-op ovs-vsctl write waited for), and
the time until vswitchd has applied a CNI burst is printed too (a DEL answers once the
port is gone from the database, before vswitchd is done). Several rounds give the
spread. ``--profile`` also samples the service process with py-spy (``pip install
py-spy``) during the bursts and prints its top functions.

    .venv/bin/python bench/bench_burst.py [--calls 32] [--rounds 5] [--profile]
"""

from __future__ import annotations

import argparse
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

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import bench_cni  # noqa: E402
import pod_path  # noqa: E402
from cni_timing import percentile  # noqa: E402


def burst(calls: list[Callable[[], float]]) -> tuple[float, list[float]]:
    """Run every call at once; (seconds from the first start to the last end, each call's)."""
    gate = threading.Barrier(len(calls) + 1)
    times: list[float] = [0.0] * len(calls)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        gate.wait()
        try:
            times[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - reported after the burst
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    gate.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    total = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} calls of the burst failed, first: {errors[0]}")
    return total, times


def summary(name: str, totals: list[float], each: list[float]) -> float:
    ms = [t * 1000 for t in each]
    tot = sorted(t * 1000 for t in totals)
    p50 = statistics.median(tot)
    print(f"  {name:<30} burst total p50={p50:7.1f} ms (rounds {tot[0]:.0f}..{tot[-1]:.0f})  "
          f"per call p50={percentile(ms, 0.5):6.1f} p99={percentile(ms, 0.99):6.1f} ms")
    return p50


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.access(spy, os.X_OK):
        print("note: py-spy not installed (pip install py-spy): no profile")
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--format", "raw", "--output", str(out), "--threads", "--idle",
                             "--rate", "200", "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def print_profile(path: Path, top: int = 25) -> None:
    """Leaf frames of py-spy's raw (collapsed) output, by samples (idle threads included,
    so waits show where they wait)."""
    leaves: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        leaf = ";".join(f.split(" (")[0] for f in frames[-3:])
        leaves[leaf] = leaves.get(leaf, 0) + n
    print(f"py-spy, service process, {total} samples (all threads), top leaves:")
    for leaf, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {leaf[-150:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--pmd-maxsleep", type=int, default=10000)
    parser.add_argument("--plugin-python", default=bench_cni.HOST_PYTHON)
    parser.add_argument("--no-relay", action="store_true")
    args = parser.parse_args()
    bench_cni.DEVICES = args.calls
    args.warmup = 0
    from cni.install import install
    from demo.private_ovs import INSTALL_HINT, PrivateOvs, missing_ovs_parts

    try:
        from cni.install import find_relay
    except ImportError:  # a tree before the relay (a base-line run)
        def find_relay(choice: str | None = None) -> Path | None:
            return None

    if missing_ovs_parts() or not os.access(bench_cni.HOST_LOCAL, os.X_OK):
        print(f"cannot run: {INSTALL_HINT} containernetworking-plugins")
        return 2
    base = Path(tempfile.mkdtemp(prefix="nnbb-", dir="/tmp"))
    volatile = Path(tempfile.mkdtemp(prefix="nnbb-", dir=bench_cni.TMPFS))
    netns_name = f"nnburst-{os.getpid()}"
    ovs = PrivateOvs(base / "ovs", pmd_maxsleep_us=args.pmd_maxsleep)
    phase = None
    try:
        ovs.start()
        ovs.vsctl("add-br", bench_cni.BRIDGE, "--", "set", "bridge", bench_cni.BRIDGE,
                  "datapath_type=netdev")
        subprocess.run(["ip", "netns", "add", netns_name], check=True)
        relay = find_relay("none" if args.no_relay else "auto")
        node = pod_path.Node(ovs=ovs, bridge=bench_cni.BRIDGE, netns_name=netns_name,
                             plugin=install(base / "bin" / "numanet", args.plugin_python,
                                            **({"relay": relay} if relay else {})),
                             work_dir=base, volatile_dir=volatile)
        phase = bench_cni.ColdPhase(args, node)
        phase.start()
        assert phase.service is not None
        n = args.calls
        print(f"CNI burst bench: {n} concurrent calls per burst, {args.rounds} rounds, "
              f"{len(os.sched_getaffinity(0))} CPUs, plugin "
              f"{'relay' if relay else 'Python shim'}, load average {os.getloadavg()[0]:.1f}")
        spy = profile(phase.service.pid, 3600, base / "profile.txt") if args.profile else None
        results: dict[str, tuple[list[float], list[float]]] = {
            k: ([], []) for k in ("add", "del", "vsctl_add", "vsctl_del")}
        settled: dict[str, list[float]] = {"add": [], "del": []}

        def settle() -> float:
            """Until ovs-vswitchd has applied every change so far (a no-op write that
            ovs-vsctl waits for, as it waits for its own): each burst starts on a quiet
            vswitchd, and the CNI's DEL answers before vswitchd is done (the removals
            settle in the background), so that time is shown too."""
            start = time.perf_counter()
            ovs.vsctl("set", "Open_vSwitch", ".", f"external_ids:bench-settle={time.time_ns()}")
            return time.perf_counter() - start

        def record(key: str, outcome: tuple[float, list[float]]) -> None:
            results[key][0].append(outcome[0])
            results[key][1].extend(outcome[1])

        for r in range(args.rounds + 1):  # round 0 warms up
            ids = [1000 * r + i for i in range(n)]
            settle()
            adds = burst([lambda i=i: phase.cni(node.plugin, "ADD", i) for i in ids])
            add_settled = adds[0] + settle()
            dels = burst([lambda i=i: phase.cni(node.plugin, "DEL", i) for i in ids])
            del_settled = dels[0] + settle()
            vadd = burst([lambda i=i: phase.vsctl_add(i) for i in range(n)])
            settle()
            vdel = burst([lambda i=i: phase.vsctl_del(i) for i in range(n)])
            if r:
                settled["add"].append(add_settled)
                settled["del"].append(del_settled)
            if r:
                for key, outcome in (("add", adds), ("del", dels), ("vsctl_add", vadd),
                                     ("vsctl_del", vdel)):
                    record(key, outcome)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        add = summary(f"CNI ADD x{n}", *results["add"])
        delete = summary(f"CNI DEL x{n}", *results["del"])
        vadd = summary(f"ovs-vsctl add-port x{n}", *results["vsctl_add"])
        vdel = summary(f"ovs-vsctl del-port x{n}", *results["vsctl_del"])
        for verb in ("add", "del"):
            ms = sorted(t * 1000 for t in settled[verb])
            print(f"  CNI {verb.upper()} x{n}, until ovs-vswitchd applied all: p50="
                  f"{statistics.median(ms):7.1f} ms (rounds {ms[0]:.0f}..{ms[-1]:.0f})")
        leaks = phase.leaks()
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        print(f"target {n} DELs no slower than {n} ADDs (burst p50): {delete:.0f} ms vs "
              f"{add:.0f} ms  {'OK' if delete <= add else 'MISSED'}")
        for verb, ours, theirs in (("ADD", add, vadd), ("DEL", delete, vdel)):
            ratio = ours / theirs
            print(f"target {n} CNI {verb}s within 1.5x of {n} ovs-vsctl calls (burst p50): "
                  f"{ours:.0f} ms vs {theirs:.0f} ms ({ratio:.2f}x)  "
                  f"{'OK' if ratio <= 1.5 else 'MISSED'}")
        if spy is not None and (base / "profile.txt").exists():
            print_profile(base / "profile.txt")
        return 1 if leaks else 0
    finally:
        if phase is not None:
            phase.stop()
        subprocess.run(["ip", "netns", "delete", netns_name], check=False, capture_output=True)
        ovs.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(volatile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
