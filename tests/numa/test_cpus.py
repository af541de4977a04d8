"""CPU list / mask parsing and CPU -> NUMA node mapping."""

from __future__ import annotations

import pytest
from helpers.sysfs import four_nodes, two_nodes

import numa
from numa import cpus_to_nodes, format_cpulist, format_cpumask, parse_cpulist, parse_cpumask


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-3,8,10-11", {0, 1, 2, 3, 8, 10, 11}),
        ("0", {0}),
        ("5-5", {5}),
        ("", set()),
        ("\n", set()),  # a CPU-less node's cpulist is an empty line
        ("  1 , 3-4 \n", {1, 3, 4}),
        ("3,1,2,1", {1, 2, 3}),  # duplicates and order do not matter
        ("0-15:2/4", {0, 1, 4, 5, 8, 9, 12, 13}),  # kernel stride syntax
        ("0-9:3", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}),  # used == group: everything
    ],
)
def test_parse_cpulist(text: str, expected: set[int]) -> None:
    assert parse_cpulist(text) == frozenset(expected)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0-", "bad item '0-'"),
        ("a", "bad item 'a'"),
        ("1,,2", "bad item ''"),
        ("3-1", "runs backwards"),
        ("-1", "bad item '-1'"),
        ("0-70000", "beyond"),
        ("0-7:3/2", "bad stride"),
        ("0x3", "bad item '0x3'"),
    ],
)
def test_parse_cpulist_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_cpulist(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0x3", {0, 1}),
        ("0X6", {1, 2}),
        ("6", {1, 2}),  # OVS pmd-cpu-mask without 0x
        ("0", set()),
        ("00000000,00000000", set()),
        ("ff,ffffffff", set(range(40))),
        ("00000001,00000000", {32}),
        ("1,0", {32}),  # short words are zero-padded like the kernel's parser
        ("80000000\n", {31}),
        ("1" + "0" * 24, {96}),  # one long word without commas is one big number
    ],
)
def test_parse_cpumask(text: str, expected: set[int]) -> None:
    assert parse_cpumask(text) == frozenset(expected)


@pytest.mark.parametrize(
    "text", ["", "0x", "xyz", "0x-1", "ff,", ",ff", "1,123456789", "0-3", "ff\n,ff"])
def test_parse_cpumask_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="cpumask"):
        parse_cpumask(text)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="string"):
        parse_cpulist(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hex string"):
        parse_cpumask(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("cpus", [set(), {0}, {0, 1, 2, 3, 8}, {1, 3, 5}, {7, 8, 9, 63, 64}])
def test_format_round_trips(cpus: set[int]) -> None:
    assert parse_cpulist(format_cpulist(cpus)) == frozenset(cpus)
    assert parse_cpumask(format_cpumask(cpus)) == frozenset(cpus)


def test_format_cpulist_is_compact() -> None:
    assert format_cpulist({11, 10, 8, 3, 2, 1, 0}) == "0-3,8,10-11"
    assert format_cpumask({1, 2}) == "0x6"


def test_cpus_to_nodes_two_nodes(tmp_path) -> None:
    topo = numa.discover(two_nodes(tmp_path))
    assert cpus_to_nodes(parse_cpulist("0-3"), topo) == {0}
    assert cpus_to_nodes(parse_cpulist("12"), topo) == {1}
    assert cpus_to_nodes(parse_cpumask("0x1001"), topo) == {0, 1}  # CPUs 0 and 12
    assert cpus_to_nodes(set(), topo) == frozenset()
    # CPU 99 does not exist: it belongs to no node rather than to node 0
    assert cpus_to_nodes({99}, topo) == frozenset()
    assert topo.node_of_cpu(13) == 1
    assert topo.node_of_cpu(99) is None


def test_cpus_to_nodes_four_nodes(tmp_path) -> None:
    topo = numa.discover(four_nodes(tmp_path))
    assert cpus_to_nodes(parse_cpulist("3-4,15"), topo) == {0, 1, 3}
    assert cpus_to_nodes(parse_cpumask("ffff"), topo) == {0, 1, 2, 3}
