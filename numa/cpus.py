"""CPU sets in the two spellings the kernel and the vSwitches use, and CPU -> NUMA node mapping.

- a *cpulist* is ``0-3,8,10-11`` (sysfs ``cpulist`` files, VPP ``corelist-workers``,
  ``taskset -c``); an empty string is the empty set (a CPU-less memory node).
- a *cpumask* is hexadecimal, least significant bit = CPU 0: ``0x3``, ``6`` (OVS
  ``pmd-cpu-mask``) or sysfs style with 32-bit comma-separated words, most significant
  first: ``ff,ffffffff``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from numa.model import Topology

# Generous bound: a typo such as "0-40000000" must not allocate a set of 40 M ints.
MAX_CPUS = 1 << 16

_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+)(?:/(\d+))?)?)?$")
_HEX_WORD = re.compile(r"^[0-9a-fA-F]+$")


def parse_cpulist(text: str) -> frozenset[int]:
    """``"0-3,8,10-11"`` -> ``{0, 1, 2, 3, 8, 10, 11}``.

    Also accepts the kernel's stride form ``0-15:2/4`` (groups of 2 every 4 CPUs), spaces
    around items and a trailing newline. Raises ValueError naming the bad item.
    """
    if not isinstance(text, str):
        raise ValueError(f"cpulist must be a string such as '0-3,8', got {type(text).__name__}")
    cpus: set[int] = set()
    stripped = text.strip()
    if not stripped:
        return frozenset()
    for raw in stripped.split(","):
        item = raw.strip()
        match = _RANGE.fullmatch(item)
        if not match:
            raise ValueError(
                f"cpulist {text.strip()!r}: bad item {item!r}; expected N or N-M (e.g. '0-3,8')"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"cpulist {text.strip()!r}: range {item!r} runs backwards")
        if last >= MAX_CPUS:
            raise ValueError(f"cpulist {text.strip()!r}: CPU {last} is beyond {MAX_CPUS - 1}")
        used = int(match.group(3)) if match.group(3) is not None else 1
        group = int(match.group(4)) if match.group(4) is not None else used
        if used < 1 or group < used:
            raise ValueError(f"cpulist {text.strip()!r}: bad stride in {item!r}")
        for start in range(first, last + 1, group):
            cpus.update(range(start, min(start + used, last + 1)))
    return frozenset(cpus)


def parse_cpumask(text: str) -> frozenset[int]:
    """``"0x3"`` -> ``{0, 1}``; ``"ff,ffffffff"`` (sysfs words) -> ``{0..39}``.

    Commas separate 32-bit words, most significant first, as in sysfs ``cpumap`` files;
    a word shorter than 8 digits is zero-padded, as the kernel's parser does.
    """
    if not isinstance(text, str):
        raise ValueError(f"cpumask must be a hex string such as '0x3', got {type(text).__name__}")
    stripped = text.strip()
    body = stripped[2:] if stripped[:2].lower() == "0x" else stripped
    words = body.split(",")
    if not body or any(not _HEX_WORD.fullmatch(w) for w in words):
        raise ValueError(
            f"cpumask {stripped!r} is not hexadecimal; expected e.g. '0x3' or 'ff,ffffffff'"
        )
    if len(words) > 1 and any(len(w) > 8 for w in words):
        raise ValueError(f"cpumask {stripped!r}: comma-separated words are at most 8 hex digits")
    value = 0
    for word in words:
        value = (value << 32) | int(word, 16)
    if value.bit_length() > MAX_CPUS:
        raise ValueError(f"cpumask {stripped!r} names CPUs beyond {MAX_CPUS - 1}")
    return frozenset(i for i in range(value.bit_length()) if value >> i & 1)


def format_cpulist(cpus: Iterable[int]) -> str:
    """The compact form a person reads: ``{0,1,2,3,8}`` -> ``"0-3,8"``; empty -> ``""``."""
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


def format_cpumask(cpus: Iterable[int]) -> str:
    """``{1, 2}`` -> ``"0x6"`` (the form OVS ``pmd-cpu-mask`` takes)."""
    value = 0
    for cpu in cpus:
        value |= 1 << cpu
    return hex(value)


def cpus_to_nodes(cpus: Iterable[int], topology: Topology) -> frozenset[int]:
    """The NUMA nodes that hold any of ``cpus``.

    Parse a string first with ``parse_cpulist`` or ``parse_cpumask``. CPUs the topology
    does not know (offline or absent) belong to no node and are left out: a vSwitch mask
    naming a missing CPU polls nowhere there.
    """
    return topology.nodes_of(cpus)
