"""The CPU-count limit of CPU lists and masks (65,536 CPUs: 0 to 65535), one below, at
and one above, and the stride forms at their edges."""

from __future__ import annotations

import pytest

from numa.cpus import MAX_CPUS, parse_cpulist, parse_cpumask


def test_the_limit_is_65536_cpus() -> None:
    assert MAX_CPUS == 65536


@pytest.mark.parametrize("text", ["65534", "65535", "65530-65535", "0-65535"])
def test_cpulists_up_to_cpu_65535(text: str) -> None:
    cpus = parse_cpulist(text)
    assert max(cpus) <= 65535
    assert len(parse_cpulist("0-65535")) == 65536


@pytest.mark.parametrize("text", ["65536", "0-65536", "65536-65536", "1,70000"])
def test_cpulists_beyond_cpu_65535_are_refused(text: str) -> None:
    last = int(text.split(",")[-1].split("-")[-1])
    with pytest.raises(ValueError) as err:
        parse_cpulist(text)
    assert str(err.value) == f"cpulist {text!r}: CPU {last} is beyond 65535"


def _mask_with_highest_cpu(cpu: int) -> str:
    """A mask (no commas) whose highest set bit is ``cpu``."""
    return hex(1 << cpu)


def test_cpumasks_up_to_cpu_65535() -> None:
    assert parse_cpumask(_mask_with_highest_cpu(65535)) == frozenset({65535})
    assert parse_cpumask(_mask_with_highest_cpu(65534)) == frozenset({65534})


def test_cpumasks_beyond_cpu_65535_are_refused() -> None:
    mask = _mask_with_highest_cpu(65536)
    with pytest.raises(ValueError) as err:
        parse_cpumask(mask)
    assert str(err.value) == f"cpumask {mask!r} names CPUs beyond 65535"


@pytest.mark.parametrize(("text", "expected"), [
    ("0-7:1/2", {0, 2, 4, 6}),
    ("0-7:2/8", {0, 1}),
    ("1-6:2/3", {1, 2, 4, 5}),
    ("0-8:1/4", {0, 4, 8}),  # the last group starts at the range's end
    ("3-3:1/1", {3}),
])
def test_strides(text: str, expected: set[int]) -> None:
    assert parse_cpulist(text) == frozenset(expected)


@pytest.mark.parametrize("text", ["0-9:0", "0-9:0/4", "0-9:3/2", "0-9:2/0"])
def test_bad_strides_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad stride"):
        parse_cpulist(text)
