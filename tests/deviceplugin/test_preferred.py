"""Preferred allocation: fewest NUMA nodes, must-include first, lowest indexes, exact size."""

from __future__ import annotations

import itertools
import random

import pytest

from deviceplugin import naming
from deviceplugin.preferred import DeviceLayout, PreferredAllocationError, preferred_allocation


def locate(device_id: str) -> tuple[int | None, tuple[int, str]]:
    """Slot IDs carry their node and index; PCI addresses have an unknown node here."""
    if naming.is_pci_address(device_id):
        return None, (0, device_id)
    _, node, index = naming.parse_slot_id(device_id)
    return node, (index, device_id)


def layout(*groups: list[str]) -> DeviceLayout:
    return DeviceLayout.of((d, *locate(d)) for group in groups for d in group)


def prefer(available: list[str], must: list[str], size: int) -> list[str]:
    return preferred_allocation(available, must, size, layout(available, must))


def ids(node: int, *indexes: int) -> list[str]:
    return [naming.slot_device_id("p", node, i) for i in indexes]


# available per node (node -> indexes), must_include, size, expected answer
CASES = [
    pytest.param({0: [0, 1, 2], 1: [0, 1, 2]}, [], 2, ids(0, 0, 1),
                 id="fits-one-node-lowest-node-and-indexes"),
    pytest.param({0: [0], 1: [0, 1, 2]}, [], 2, ids(1, 0, 1),
                 id="skips-a-node-too-small-to-hold-all"),
    pytest.param({0: [5, 3, 9], 1: [1]}, [], 2, ids(0, 3, 5),
                 id="lowest-indexes-whatever-the-input-order"),
    pytest.param({0: [0, 1, 2], 1: [0, 1, 2]}, ids(1, 2), 2, ids(1, 2, 0),
                 id="prefers-the-must-include-node"),
    pytest.param({0: [0, 1], 1: [0, 1, 2]}, ids(0, 1), 3, ids(0, 1, 0) + ids(1, 0),
                 id="must-include-node-first-then-fewest-extra"),
    pytest.param({0: [0, 1], 1: [0], 2: [0, 1, 2, 3]}, [], 4, ids(2, 0, 1, 2, 3),
                 id="one-big-node-beats-two-small-ones"),
    pytest.param({0: [0, 1], 1: [0, 1], 2: [0]}, [], 4, ids(0, 0, 1) + ids(1, 0, 1),
                 id="two-nodes-needed-lowest-pair"),
    pytest.param({0: [0, 1], 1: [0, 1, 2], 2: [0, 1, 2]}, [], 5,
                 ids(0, 0, 1) + ids(1, 0, 1, 2), id="two-nodes-lowest-pair-that-fits"),
    pytest.param({0: [0], 1: [0, 1, 2], 2: [0, 1, 2]}, [], 5,
                 ids(1, 0, 1, 2) + ids(2, 0, 1), id="two-nodes-skips-a-pair-too-small"),
    pytest.param({0: [0], 1: [0]}, ids(0, 0) + ids(1, 0), 2, ids(0, 0) + ids(1, 0),
                 id="must-include-is-the-whole-answer"),
    pytest.param({0: [0, 1, 2, 3]}, [], 4, ids(0, 0, 1, 2, 3), id="everything-available"),
]


@pytest.mark.parametrize(("available", "must", "size", "expected"), CASES)
def test_preferred_choice(available: dict[int, list[int]], must: list[str], size: int,
                          expected: list[str]) -> None:
    pool = [d for node, indexes in available.items() for d in ids(node, *indexes)]
    random.Random(7).shuffle(pool)
    assert prefer(pool, must, size) == expected


def test_unknown_numa_devices_form_one_group_after_known_nodes() -> None:
    available = ["0000:3b:00.1", *ids(1, 0), "0000:00:03.0"]
    assert prefer(available, [], 1) == ids(1, 0)
    # Two fit in the unknown group alone: one group beats spreading over two.
    assert prefer(available, [], 2) == ["0000:00:03.0", "0000:3b:00.1"]
    assert prefer(available, [], 3) == \
        ids(1, 0) + ["0000:00:03.0", "0000:3b:00.1"]


@pytest.mark.parametrize(("available", "must", "size", "message"), [
    (ids(0, 0, 1), [], 3, "allocation_size 3 is more than the 2 available devices"),
    (ids(0, 0, 1), [], 0, "allocation_size must be at least 1"),
    (ids(0, 0, 1), ids(0, 0, 1), 1, "must_include_deviceIDs has 2 devices, more than"),
    (ids(0, 0, 1), ids(1, 0), 1, "must_include_deviceIDs p-n1-000 are not in available"),
    (ids(0, 0, 0), [], 1, "lists a device more than once"),
])
def test_impossible_requests_say_why(available: list[str], must: list[str], size: int,
                                     message: str) -> None:
    with pytest.raises(PreferredAllocationError, match=message):
        prefer(available, must, size)


def _nodes(chosen: list[str]) -> set[int | None]:
    return {locate(d)[0] for d in chosen}


def _fewest_nodes_possible(available: list[str], must: list[str], size: int) -> int:
    """Brute force: the smallest node count of any valid answer."""
    must_nodes = _nodes(must)
    by_node: dict[int | None, int] = {}
    for d in available:
        if d not in must:
            by_node[locate(d)[0]] = by_node.get(locate(d)[0], 0) + 1
    need = size - len(must)
    best = None
    nodes = list(by_node)
    for count in range(len(nodes) + 1):
        for combo in itertools.combinations(nodes, count):
            if sum(by_node[n] for n in combo) >= need:
                total = len(must_nodes | set(combo))
                best = total if best is None else min(best, total)
    assert best is not None
    return best


def test_property_random_requests() -> None:
    """For many random requests: exact size, no duplicates, only available devices, every
    must-include device, and no answer spanning more nodes than necessary."""
    rng = random.Random(20261128)
    for _ in range(400):
        nodes = rng.randint(1, 6)
        available = [d for node in range(nodes)
                     for d in ids(node, *rng.sample(range(40), rng.randint(0, 6)))]
        if not available:
            continue
        rng.shuffle(available)
        size = rng.randint(1, len(available))
        must = rng.sample(available, rng.randint(0, min(size, 3)))
        chosen = prefer(available, must, size)
        assert len(chosen) == size
        assert len(set(chosen)) == size
        assert set(chosen) <= set(available)
        assert set(must) <= set(chosen)
        # Fewest nodes with the must-include nodes counted (they are in any answer).
        assert len(_nodes(chosen) | _nodes(must)) == _fewest_nodes_possible(available, must, size)
        # Within each node, the lowest indexes of the non-must devices were taken.
        for node in _nodes(chosen):
            taken = sorted(locate(d)[1] for d in chosen if locate(d)[0] == node and d not in must)
            pool = sorted(locate(d)[1] for d in available if locate(d)[0] == node and d not in must)
            assert taken == pool[:len(taken)]
