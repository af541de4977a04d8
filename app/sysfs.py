"""What the kernel says about CPUs and NUMA nodes: ``/sys/devices/system/node`` and the
PCI functions' ``numa_node``. The container sees the host's sysfs (read-only), so these
are the node's real facts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from app.errors import AppError

_NODE_DIR = re.compile(r"^node(\d+)$")


def parse_cpulist(text: str, where: str = "CPU list") -> list[int]:
    """``0-3,8,10-11`` -> [0, 1, 2, 3, 8, 10, 11] (sorted, no duplicates)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        first, sep, last = part.partition("-")
        try:
            low, high = int(first), int(last) if sep else int(first)
        except ValueError:
            raise AppError(f"{where}: {text.strip()!r} is not a CPU list",
                           "write CPUs as in cpuset files, e.g. 0-3,8") from None
        if low < 0 or high < low:
            raise AppError(f"{where}: {part!r} is not a CPU range", "write LOW-HIGH, e.g. 2-5")
        cpus.update(range(low, high + 1))
    return sorted(cpus)


def format_cpulist(cpus: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> ``0-2,5``."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def node_cpus(sysfs: Path) -> dict[int, frozenset[int]]:
    """NUMA node -> its CPUs; empty when the kernel shows no nodes (no NUMA: one node)."""
    base = sysfs / "devices" / "system" / "node"
    nodes: dict[int, frozenset[int]] = {}
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return nodes
    for entry in entries:
        match = _NODE_DIR.match(entry.name)
        if not match:
            continue
        try:
            text = (entry / "cpulist").read_text()
        except OSError:
            continue
        nodes[int(match.group(1))] = frozenset(parse_cpulist(text, str(entry / "cpulist")))
    return nodes


def pci_numa_node(sysfs: Path, address: str) -> int | None:
    """The NUMA node of a PCI function; None when unknown (-1, or not in sysfs)."""
    try:
        value = int((sysfs / "bus" / "pci" / "devices" / address / "numa_node").read_text())
    except (OSError, ValueError):
        return None
    return value if value >= 0 else None
