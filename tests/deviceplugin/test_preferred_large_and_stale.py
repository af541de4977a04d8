"""Preferred allocation beyond 16 NUMA groups (the greedy path) and with device IDs the
plugin no longer knows (stale IDs from the kubelet): what is chosen, exactly."""

from __future__ import annotations

import random

import pytest

from deviceplugin import naming
from deviceplugin.preferred import (
    DeviceLayout,
    PreferredAllocationError,
    _choose_extra_nodes,
    preferred_allocation,
)


def ids(node: int, *indexes: int) -> list[str]:
    return [naming.slot_device_id("p", node, i) for i in indexes]


def pool(sizes: dict[int, int]) -> list[str]:
    """``sizes``: NUMA node -> how many devices it has available (indexes from 0)."""
    return [d for node, count in sizes.items() for d in ids(node, *range(count))]


def layout_of(devices: list[str], unknown_numa: tuple[str, ...] = ()) -> DeviceLayout:
    def where(device_id: str) -> tuple[str, int | None, tuple[int, str]]:
        if device_id in unknown_numa:
            return device_id, None, (0, device_id)
        _, node, index = naming.parse_slot_id(device_id)
        return device_id, node, (index, device_id)
    return DeviceLayout.of(where(d) for d in devices)


def prefer(available: list[str], size: int, must: list[str] | None = None,
           layout: DeviceLayout | None = None) -> list[str]:
    shuffled = list(available)
    random.Random(17).shuffle(shuffled)
    return preferred_allocation(shuffled, must or [], size,
                                layout if layout is not None else layout_of(available))


def nodes_of(chosen: list[str]) -> list[int]:
    return sorted({naming.parse_slot_id(d)[1] for d in chosen})


# --- beyond 16 NUMA groups ----------------------------------------------------------------

def test_17_nodes_one_big_enough_node_is_chosen_alone() -> None:
    sizes = {node: 1 for node in range(17)} | {10: 3}
    assert prefer(pool(sizes), 3) == ids(10, 0, 1, 2)


def test_17_nodes_an_exact_fit_takes_no_extra_node() -> None:
    # Nodes 10 and 12 (3 each) cover 6 exactly: a third node would only add a node.
    sizes = {node: 1 for node in range(17)} | {10: 3, 12: 3}
    chosen = prefer(pool(sizes), 6)
    assert chosen == ids(10, 0, 1, 2) + ids(12, 0, 1, 2)


def test_17_nodes_the_biggest_first_then_the_lower_node_among_equals() -> None:
    sizes = {node: 1 for node in range(17)} | {3: 2, 5: 4, 9: 2, 14: 2}
    # 4 from node 5, then one of the 2-device nodes: the lowest, node 3.
    assert prefer(pool(sizes), 6) == ids(3, 0, 1) + ids(5, 0, 1, 2, 3)
    # The chosen nodes fill in node order: all of node 3 first.
    assert prefer(pool(sizes), 5) == ids(3, 0, 1) + ids(5, 0, 1, 2)
    # Three nodes needed: 5, then 3 and 9 (14 is as big but higher).
    assert prefer(pool(sizes), 8) == ids(3, 0, 1) + ids(5, 0, 1, 2, 3) + ids(9, 0, 1)


def test_17_nodes_greedy_may_skip_a_lower_pair_of_the_same_count() -> None:
    """Beyond 16 groups the biggest go first: {0, 2} rather than the lower pair {0, 1}.
    Both span two nodes, the rule that matters; trying every pair is what 16 caps."""
    sizes = {node: 1 for node in range(17)} | {0: 3, 2: 3}
    assert prefer(pool(sizes), 4) == ids(0, 0, 1, 2) + ids(2, 0)


def test_16_other_nodes_still_try_every_combination() -> None:
    """At 16 groups the exhaustive search still runs and finds the lowest pair {0, 1}."""
    sizes = {node: 1 for node in range(16)} | {0: 3, 2: 3}
    assert prefer(pool(sizes), 4) == ids(0, 0, 1, 2) + ids(1, 0)


def test_17_others_besides_the_must_include_node_take_the_greedy_path() -> None:
    sizes = {node: 1 for node in range(18)} | {0: 3, 2: 3, 17: 2}
    must = ids(17, 1)
    # node 17 holds one more; 3 more needed: greedy takes node 0 (biggest, lowest).
    assert prefer(pool(sizes), 5, must) == must + ids(17, 0) + ids(0, 0, 1, 2)
    # With 16 others (node 16 gone) the same request also finds node 0.
    del sizes[16]
    assert prefer(pool(sizes), 5, must) == must + ids(17, 0) + ids(0, 0, 1, 2)


@pytest.mark.parametrize("nodes", [17, 24, 64])
def test_many_nodes_every_request_spans_the_fewest_nodes(nodes: int) -> None:
    rng = random.Random(nodes)
    for _ in range(60):
        sizes = {node: rng.randint(1, 5) for node in range(nodes)}
        available = pool(sizes)
        size = rng.randint(1, len(available))
        chosen = prefer(available, size)
        assert len(chosen) == len(set(chosen)) == size
        assert set(chosen) <= set(available)
        # Fewest nodes: the biggest nodes first is the minimum count.
        biggest = sorted(sizes.values(), reverse=True)
        fewest = next(k for k in range(1, nodes + 1) if sum(biggest[:k]) >= size)
        assert len(nodes_of(chosen)) == fewest
        # Lowest indexes within each chosen node.
        for node in nodes_of(chosen):
            taken = sorted(naming.parse_slot_id(d)[2] for d in chosen
                           if naming.parse_slot_id(d)[1] == node)
            assert taken == list(range(len(taken)))


def test_everything_from_many_nodes() -> None:
    sizes = {node: 2 for node in range(20)}
    assert sorted(prefer(pool(sizes), 40)) == sorted(pool(sizes))
    with pytest.raises(PreferredAllocationError, match="allocation_size 41 is more than"):
        prefer(pool(sizes), 41)


# --- stale IDs: the kubelet lists devices the plugin no longer knows ----------------------

KNOWN = ids(0, 0, 1)
STALE = ["p-n9-003", "p-n9-001", "p-n9-002"]  # not in the layout (the pool shrank)


def test_stale_ids_fill_a_request_that_needs_them() -> None:
    layout = layout_of(KNOWN)
    # 4 of 5: the known node first, then the lowest stale IDs.
    assert prefer(KNOWN + STALE, 4, layout=layout) == KNOWN + ["p-n9-001", "p-n9-002"]
    assert prefer(KNOWN + STALE, 5, layout=layout) == KNOWN + sorted(STALE)


def test_a_single_stale_id_is_not_lost() -> None:
    layout = layout_of(KNOWN)
    assert prefer(KNOWN + ["p-n9-001"], 3, layout=layout) == KNOWN + ["p-n9-001"]


def test_stale_ids_are_one_group_of_unknown_numa() -> None:
    layout = layout_of(KNOWN)
    # Three fit in the stale group alone, two in node 0 alone: each in one group.
    assert prefer(KNOWN + STALE, 3, layout=layout) == sorted(STALE)
    assert prefer(KNOWN + STALE, 2, layout=layout) == KNOWN
    assert prefer(KNOWN + STALE, 1, layout=layout) == KNOWN[:1]


def test_stale_ids_come_after_the_known_devices_of_unknown_numa() -> None:
    nics = ["0000:3b:00.4", "0000:3b:00.2"]  # known, NUMA node unknown
    stale = ["0000:3b:00.3", "0000:3b:00.1"]
    layout = layout_of(nics, unknown_numa=tuple(nics))
    available = nics + stale
    assert prefer(available, 1, layout=layout) == ["0000:3b:00.2"]
    assert prefer(available, 2, layout=layout) == ["0000:3b:00.2", "0000:3b:00.4"]
    assert prefer(available, 3, layout=layout) == ["0000:3b:00.2", "0000:3b:00.4",
                                                   "0000:3b:00.1"]
    assert prefer(available, 4, layout=layout) == ["0000:3b:00.2", "0000:3b:00.4",
                                                   "0000:3b:00.1", "0000:3b:00.3"]


def test_a_layout_that_knows_nothing_still_answers() -> None:
    empty = DeviceLayout({})
    assert prefer(STALE, 2, layout=empty) == ["p-n9-001", "p-n9-002"]
    assert prefer(STALE, 2, ["p-n9-003"], layout=empty) == ["p-n9-003", "p-n9-001"]


def test_a_stale_must_include_id_is_kept() -> None:
    layout = layout_of(KNOWN)
    assert prefer(KNOWN + STALE[:1], 2, ["p-n9-003"], layout=layout) == ["p-n9-003", KNOWN[0]]
    # With a stale must-include, the other stale IDs are its group.
    assert prefer(KNOWN + STALE, 3, ["p-n9-003"], layout=layout) == \
        ["p-n9-003", "p-n9-001", "p-n9-002"]


def test_the_must_include_node_covers_exactly_what_is_needed() -> None:
    available = ids(0, 0, 1, 2) + ids(1, 0, 1, 2)
    assert prefer(available, 3, ids(1, 2)) == ids(1, 2, 0, 1)
    assert prefer(available, 4, ids(1, 2)) == ids(1, 2, 0, 1) + ids(0, 0)


def test_duplicate_must_include_ids_count_once() -> None:
    available = ids(0, 0, 1, 2)
    assert prefer(available, 2, ids(0, 2) * 2) == ids(0, 2, 0)


def test_no_extra_node_when_the_must_include_nodes_have_enough() -> None:
    groups = {0: {"a", "b"}, 1: {"c"}, None: {"d"}}
    assert _choose_extra_nodes(groups, {0}, 2) == []
    assert _choose_extra_nodes(groups, {0}, 1) == []
    assert _choose_extra_nodes(groups, {0}, 3) == [1]
    assert _choose_extra_nodes(groups, {0}, 4) == [1, None]
    # A must-include node with no further devices (absent from groups) adds nothing.
    assert _choose_extra_nodes(groups, {5}, 1) == [0]
