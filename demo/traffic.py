"""Packets between the two pods' testpmds, through OVS, counted each way.

Pod A sends the first bursts (``start tx_first``) towards B's MAC; both swap MAC
addresses and send every packet back (``macswap``), so a fixed number of packets
ping-pongs through OVS's NORMAL (MAC learning) bridge and the rate each way is what the
path sustains. A→B is what B's port received; B→A what A's port received, read from
testpmd's device counters.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from demo.testpmd import PortStats, Testpmd

TX_FIRST_BURSTS = 8  # packets in flight = 8 bursts of 32; more only adds queueing here
_SETTLE_S = 0.3
_READ_EVERY_S = 0.5


class NoTraffic(RuntimeError):
    pass


@dataclass(frozen=True)
class Direction:
    source: str
    destination: str
    pps: float
    packets: int

    def to_json(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.destination, "pps": round(self.pps),
                "packets": self.packets}


@dataclass(frozen=True)
class Result:
    seconds: float
    a_to_b: Direction
    b_to_a: Direction


def app_cpus(numa_node: int | None, index: int) -> tuple[int, int]:
    """(main lcore CPU, forwarding CPU) of pod ``index``'s testpmd, on its slot's NUMA node.

    The pods forward on different CPUs when the node has several: measured on a 2-CPU
    machine, spreading them beats stacking both busy-polling loops on one CPU, whichever
    CPU OVS's PMD shares.
    """
    import numa

    allowed = os.sched_getaffinity(0)
    cpus: list[int] = []
    if numa_node is not None:
        with contextlib.suppress(KeyError):
            cpus = sorted(numa.discover("/sys", nics=False).node(numa_node).cpus & allowed)
    cpus = cpus or sorted(allowed)
    return cpus[(index + 1) % len(cpus)], cpus[index % len(cpus)]


def measure(a: Testpmd, b: Testpmd, names: tuple[str, str], seconds: float,
            progress: Callable[[str], None]) -> Result:
    """Start the ping-pong, read the counters for ``seconds``; NoTraffic if a way is dry."""
    name_a, name_b = names
    b.command("start")
    a.command(f"start tx_first {TX_FIRST_BURSTS}")
    time.sleep(_SETTLE_S)
    first_a, first_b = a.stats(), b.stats()
    last_a, last_b = first_a, first_b
    end = time.monotonic() + seconds
    primed_again = False
    while time.monotonic() < end:
        time.sleep(min(_READ_EVERY_S, max(0.0, end - time.monotonic())))
        now_a, now_b = a.stats(), b.stats()
        if (not primed_again and now_a.at - first_a.at > 1.5
                and now_a.rx_packets == first_a.rx_packets):
            # The first bursts were lost (a link still settling): send new ones, once.
            a.command("stop")
            a.command(f"start tx_first {TX_FIRST_BURSTS}")
            primed_again = True
        progress(f"   traffic {now_a.at - first_a.at:3.1f}/{seconds:g} s   "
                 f"{name_a} -> {name_b} {kpps(_rate(last_b, now_b))}   "
                 f"{name_b} -> {name_a} {kpps(_rate(last_a, now_a))}")
        last_a, last_b = now_a, now_b
    result = Result(
        seconds=last_a.at - first_a.at,
        a_to_b=Direction(name_a, name_b, _rate(first_b, last_b),
                         last_b.rx_packets - first_b.rx_packets),
        b_to_a=Direction(name_b, name_a, _rate(first_a, last_a),
                         last_a.rx_packets - first_a.rx_packets))
    if result.a_to_b.packets <= 0 or result.b_to_a.packets <= 0:
        raise NoTraffic(f"no packets counted in both directions ({describe(result)}); "
                        f"testpmd output ends:\n{a.tail()}\n{b.tail()}")
    return result


def describe(result: Result) -> str:
    return ", ".join(f"{d.source} -> {d.destination} {kpps(d.pps)}"
                     for d in (result.a_to_b, result.b_to_a))


def kpps(pps: float) -> str:
    return f"{pps / 1000:.1f} kpps"


def _rate(before: PortStats, after: PortStats) -> float:
    elapsed = after.at - before.at
    return (after.rx_packets - before.rx_packets) / elapsed if elapsed > 0 else 0.0
