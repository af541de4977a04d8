"""GetPreferredAllocation's choice: which of the available devices a container should get.

Rules, in order:
1. every ``must_include`` device is in the answer (the kubelet reuses them from init
   containers);
2. the answer spans as few NUMA nodes as possible (a DPDK app pays for every cross-node
   packet);
3. among equally small node sets, the nodes of the must-include devices come first, then the
   lowest node IDs (beyond 16 NUMA groups besides the must-include ones, where trying every
   combination gets expensive: the biggest groups, the lower node first among equals);
4. within the chosen nodes, the lowest indexes (so allocations pack and stay predictable);
5. only devices from ``available``, exactly ``size`` of them, no duplicates.
A request that cannot be met raises PreferredAllocationError saying why.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Beyond this many NUMA groups, exhaustive combinations get expensive; fall back to greedy.
_MAX_EXACT_GROUPS = 16
# Where the unknown-NUMA group sorts: after every node ID the kernel can have (< 1024).
_UNKNOWN_NODE_LAST = 1 << 16


class PreferredAllocationError(ValueError):
    """The request cannot be satisfied; the message says which numbers do not fit."""


@dataclass(frozen=True)
class DeviceLayout:
    """Where a pool's devices are: built once per device list, read by every request.

    Kept as sets per NUMA node so that a request over thousands of available devices is a
    few set intersections in C, not a Python loop over every ID.
    """

    groups: Mapping[int | None, frozenset[str]]  # NUMA node (None: unknown) -> device IDs
    nodes: Mapping[str, int | None] = field(default_factory=dict)  # device ID -> node
    # NUMA node -> its device IDs, lowest sort key first
    ranked: Mapping[int | None, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, devices: Iterable[tuple[str, int | None, Any]]) -> DeviceLayout:
        """From (device ID, NUMA node or None, sort key) triples."""
        groups: dict[int | None, set[str]] = {}
        order: dict[str, Any] = {}
        nodes: dict[str, int | None] = {}
        for device_id, node, key in devices:
            groups.setdefault(node, set()).add(device_id)
            order[device_id] = key
            nodes[device_id] = node
        ranked = {n: tuple(sorted(ids, key=order.__getitem__)) for n, ids in groups.items()}
        return cls({n: frozenset(ids) for n, ids in groups.items()}, nodes, ranked)

    def lowest(self, node: int | None, candidates: set[str], count: int) -> list[str]:
        """The ``count`` candidates of ``node`` with the lowest sort keys; IDs the layout does
        not know (stale IDs from the kubelet, which join the unknown-NUMA group) come after
        every known one, lowest ID first."""
        ranked = self.ranked.get(node, ())
        picked: list[str] = []
        # Walk the node's pre-sorted IDs: usually a few steps, not a sort of thousands.
        for device_id in ranked:
            if device_id in candidates:
                picked.append(device_id)
                if len(picked) == count:
                    return picked
        return picked + heapq.nsmallest(count - len(picked), candidates.difference(ranked))


def preferred_allocation(available: Sequence[str], must_include: Sequence[str], size: int,
                         layout: DeviceLayout) -> list[str]:
    if size < 1:
        raise PreferredAllocationError(f"allocation_size must be at least 1, got {size}")
    available_set = set(available)
    if len(available_set) != len(available):
        raise PreferredAllocationError("available_deviceIDs lists a device more than once")
    must = list(dict.fromkeys(must_include))
    not_available = [d for d in must if d not in available_set]
    if not_available:
        raise PreferredAllocationError(
            f"must_include_deviceIDs {', '.join(not_available)} are not in available_deviceIDs")
    if len(must) > size:
        raise PreferredAllocationError(
            f"must_include_deviceIDs has {len(must)} devices, more than allocation_size {size}")
    if len(available_set) < size:
        raise PreferredAllocationError(
            f"allocation_size {size} is more than the {len(available_set)} available devices")
    need = size - len(must)
    if need == 0:
        return must

    candidates = available_set  # ours to change: no copy of thousands of IDs
    candidates.difference_update(must)
    groups: dict[int | None, set[str]] = {}
    grouped = 0
    for node, members in layout.groups.items():
        found = candidates.intersection(members)
        if found:
            groups[node] = found
            grouped += len(found)
    if grouped < len(candidates):
        # IDs the layout does not know join the unknown-NUMA group.
        strays = candidates.difference(*groups.values())
        groups.setdefault(None, set()).update(strays)
    must_nodes = {layout.nodes.get(d) for d in must}

    extra = _choose_extra_nodes(groups, must_nodes, need)
    chosen: list[str] = list(must)
    for node in sorted(must_nodes & groups.keys(), key=_node_order) + extra:
        chosen.extend(layout.lowest(node, groups[node], size - len(chosen)))
        if len(chosen) == size:
            return chosen
    raise PreferredAllocationError(  # pragma: no cover - capacity was checked above
        f"could only choose {len(chosen)} of {size} devices")


def _node_order(node: int | None) -> int:
    # Unknown NUMA (a NIC whose sysfs says -1) sorts after every real node.
    return _UNKNOWN_NODE_LAST if node is None else node


def _choose_extra_nodes(groups: Mapping[int | None, set[str]], must_nodes: set[int | None],
                        need: int) -> list[int | None]:
    """The fewest further nodes whose devices, with the must-include nodes', cover ``need``."""
    have = sum(len(groups[n]) for n in must_nodes if n in groups)
    if have >= need:
        return []
    others = sorted((n for n in groups if n not in must_nodes), key=_node_order)
    missing = need - have
    if len(others) > _MAX_EXACT_GROUPS:
        # Greedy by size gives the minimum count; ties keep the lower node first.
        picked: list[int | None] = []
        for node in sorted(others, key=lambda n: -len(groups[n])):
            if missing <= 0:
                break
            picked.append(node)
            missing -= len(groups[node])
        return sorted(picked, key=_node_order)
    for count in range(1, len(others) + 1):
        # combinations() keeps the sorted order, so the first fit has the lowest node IDs.
        for combo in itertools.combinations(others, count):
            if sum(len(groups[n]) for n in combo) >= missing:
                return list(combo)
    return others  # pragma: no cover - capacity was checked by the caller
