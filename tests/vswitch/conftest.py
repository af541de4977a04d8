"""Fixtures for the vSwitch tests: a real private OVS-DPDK and backends bound to it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.ovs import private_ovs, private_ovs_fixture, short_tmpdir, unique_bridge

from demo.private_ovs import PrivateOvs
from vswitch.api import VSwitchError
from vswitch.ovs.backend import OvsVSwitch

__all__ = ["private_ovs"]  # re-exported: that makes it a fixture of this directory

# For tests that stop daemons: their own instance, so the shared one stays up.
fresh_ovs = private_ovs_fixture(scope="function")


@dataclass
class OvsBench:
    """A backend on the shared instance, with its own bridge and slot root."""

    ovs: PrivateOvs
    switch: OvsVSwitch
    bridge: str
    slots: Path


def _bench(ovs: PrivateOvs, timeout: float = 5.0) -> Iterator[OvsBench]:
    bridge = unique_bridge()
    slots = Path(short_tmpdir("nnslots-"))
    switch = OvsVSwitch(ovs.db, bridge, timeout=timeout)
    switch.connect()
    try:
        yield OvsBench(ovs=ovs, switch=switch, bridge=bridge, slots=slots)
    finally:
        try:
            for plugged in switch.ports():
                if plugged.network == bridge:
                    switch.unplug(plugged.device_id)
        except VSwitchError:
            pass  # a test stopped the database; the instance goes away with it
        finally:
            switch.close()
            if ovs.ovsdb_pid is not None:
                ovs.vsctl("--if-exists", "del-br", bridge, wait=False)
            shutil.rmtree(slots, ignore_errors=True)


@pytest.fixture
def ovs_bench(private_ovs: PrivateOvs) -> Iterator[OvsBench]:  # noqa: F811
    yield from _bench(private_ovs)


@pytest.fixture
def fresh_bench(fresh_ovs: PrivateOvs) -> Iterator[OvsBench]:
    """Like ovs_bench on a private instance of its own, with a short timeout (1 s)."""
    yield from _bench(fresh_ovs, timeout=1.0)
