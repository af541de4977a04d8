"""Fuzzing the CNI against the real agent (tests/helpers/cni_fuzz.py says what is checked
after every case): hostile CNI environments and stdin through the real shim, and hostile
frames on the agent's socket.

In ``make test`` each runs a fixed (derandomized) set of cases, bounded to seconds, and
the first broken rule fails the test with the case shrunk by hypothesis.
``make fuzz`` (``NUMANET_FUZZ_SECONDS=N``) runs random cases for N seconds per target,
counts instead of stopping, and prints the figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers.cni_fuzz import (
    POD,
    Clock,
    CniFuzzer,
    Figures,
    Place,
    configs,
    environments,
    frames,
    seconds_budget,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.ovs

SHIM_EXAMPLES = 150
FRAME_EXAMPLES = 200


@pytest.fixture
def fuzz_place(cni_bed, pod_netns, tmp_path, monkeypatch) -> Iterator[Place]:
    devices = (cni_bed.slots.device_id("vhostuser-ovs", 30),
               cni_bed.slots.device_id("memif-ovs", 30), "0000:3b:02.0")
    for device in devices:
        cni_bed.allocate(POD[0], POD[1], device)
    trap = tmp_path / "trap"
    trap.mkdir()
    cwd = tmp_path / "cwd"
    workdir = cwd / "a" / "b" / "c"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)  # the agent runs in this process: its working directory
    yield Place(socket=cni_bed.socket, netns=pod_netns.path, ipam_dir=cni_bed.ipam_dir,
                devinfo_dir=cni_bed.devinfo_root / "cni", trap=trap, cwd=cwd, workdir=workdir,
                bridge=cni_bed.bridge, network="fuzz-net", devices=devices)


def drive(strategy: st.SearchStrategy[Any], case: Callable[[Any], None], examples: int,
          budget: float | None) -> float:
    """Run ``case`` on ``examples`` derandomized draws, or on random ones for ``budget``
    seconds; returns the seconds taken."""
    if budget is None:
        @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def bounded(value: Any) -> None:
            case(value)

        clock = Clock(0)
        bounded()
        return clock.elapsed()
    clock = Clock(budget)

    @settings(max_examples=40, derandomize=False, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def random_round(value: Any) -> None:
        if clock.left():
            case(value)

    while clock.left():
        random_round()
    return clock.elapsed()


def report(name: str, figures: Figures, seconds: float) -> None:
    print(f"\n{figures.line(name, seconds)}")  # shown with -s (make fuzz)
    for example in figures.examples:
        print(f"  {example[:600]}")
    assert figures.failures == 0 and not figures.wedged, figures.examples


def test_fuzz_the_shim_environment_and_stdin(cni_bed, fuzz_place: Place):
    budget = seconds_budget()
    figures = Figures()
    fuzzer = CniFuzzer(cni_bed, fuzz_place, figures, strict=budget is None)
    with fuzzer.watching():
        cases = st.tuples(environments(fuzz_place), configs(fuzz_place),
                          st.sampled_from((False, False, False, True)))
        seconds = drive(cases, lambda value: fuzzer.shim_case(*value), SHIM_EXAMPLES, budget)
        fuzzer.finish()
    report("shim (environment + stdin)", figures, seconds)


def test_fuzz_raw_frames_on_the_agent_socket(cni_bed, fuzz_place: Place):
    budget = seconds_budget()
    figures = Figures()
    fuzzer = CniFuzzer(cni_bed, fuzz_place, figures, strict=budget is None)
    with fuzzer.watching():
        seconds = drive(frames(fuzz_place), fuzzer.frame_case, FRAME_EXAMPLES, budget)
        fuzzer.finish()
    report("agent socket (raw frames)", figures, seconds)
