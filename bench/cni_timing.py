"""Timing a process as a container runtime execs it, and summing samples up (bench_cni.py and
its pod path share these, so every CNI figure and its ovs-vsctl reference are taken the same
way)."""

from __future__ import annotations

import os
import statistics
import subprocess
import time

# CPU time of each exec'd process (shim, ovs-vsctl), by what was timed: unlike wall
# clock it hardly moves with the load of other work on the machine.
CPU: dict[str, list[float]] = {}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


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
    """Print one figure (seconds in, milliseconds out); its (p50, p99) in ms."""
    ms = [s * 1000 for s in samples]
    p50, p99 = percentile(ms, 0.50), percentile(ms, 0.99)
    print(f"  {name:<44} n={len(ms):<4} p50={p50:7.2f} ms  p99={p99:7.2f} ms  "
          f"mean={statistics.fmean(ms):7.2f} ms")
    return p50, p99


def verdict(what: str, add_p50: float, vsctl_p50: float, verb: str = "ADD",
            vsctl: str = "add-port") -> None:
    """The issue's target, honestly: ADD (DEL) p50 no slower than one ovs-vsctl add-port
    (del-port), with the ratio."""
    result = "OK" if add_p50 <= vsctl_p50 else "MISSED"
    print(f"target CNI {verb} p50 <= ovs-vsctl {vsctl} p50 ({what}): "
          f"{add_p50:.2f} ms vs {vsctl_p50:.2f} ms ({add_p50 / vsctl_p50:.2f}x)  {result}")
