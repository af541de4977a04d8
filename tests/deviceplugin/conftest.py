"""Fixtures for device plugin tests: the agent in-process with the kubelet stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.deviceplugin import BASE_CONFIG, AgentHarness, InMemoryVSwitchDouble, short_dir
from helpers.sysfs import FakeSysfs, four_nodes, two_nodes

HarnessFactory = Callable[..., AgentHarness]


@pytest.fixture
def make_harness() -> Iterator[HarnessFactory]:
    """Build (and start) an agent harness; everything is stopped and removed afterwards."""
    made: list[AgentHarness] = []

    def make(topology: Callable[[Path], FakeSysfs] = two_nodes, config: str = BASE_CONFIG,
             vswitches: dict | None = None, start: bool = True, cdi: bool = False,
             kubelet_first: bool = True, slot_group: int | None = None) -> AgentHarness:
        root = short_dir()
        sysfs = topology(root / "sys")
        if vswitches is None:
            vswitches = {"ovs": InMemoryVSwitchDouble("ovs"),
                         "vpp": InMemoryVSwitchDouble("vpp")}
        harness = AgentHarness(root=root, sysfs=sysfs, config_text=config,
                               vswitches=vswitches, cdi=cdi, slot_group=slot_group)
        made.append(harness)
        if start:
            harness.start(kubelet_first=kubelet_first)
        return harness

    yield make
    for harness in made:
        harness.cleanup()


@pytest.fixture
def two_node_agent(make_harness: HarnessFactory) -> AgentHarness:
    return make_harness(two_nodes)


@pytest.fixture
def four_node_agent(make_harness: HarnessFactory) -> AgentHarness:
    return make_harness(four_nodes)
