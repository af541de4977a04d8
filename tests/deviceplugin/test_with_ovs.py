"""The device plugin against a real private OVS-DPDK: placement from the PMD mask, and the
vSwitch's health reaching the kubelet through ListAndWatch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.ovs import started_private_ovs
from helpers.sysfs import two_nodes

from demo.private_ovs import PrivateOvs
from vswitch.ovs.backend import OvsVSwitch

pytestmark = pytest.mark.ovs

VHOST = "numanet.io/vhostuser-ovs"

CONFIG = """\
hugepages: {pageSize: 2Mi, path: @HUGEPAGES@}
vswitches:
  ovs: {db: "@DB@", bridge: br-dp-test}
pools:
  - {name: vhostuser-ovs, kind: vhost-user, vswitch: ovs, slotsPerNode: 3, numaNodes: auto}
"""


@pytest.fixture
def ovs() -> Iterator[PrivateOvs]:
    # PMD on CPU 1: on the synthetic two-node machine that CPU belongs to NUMA node 0.
    with started_private_ovs(pmd_cpu_mask="0x2") as instance:
        yield instance


def test_real_ovs_placement_and_health_reach_the_kubelet(make_harness, ovs: PrivateOvs) -> None:
    backend = OvsVSwitch(ovs.db, "br-dp-test", timeout=2.0)
    harness = make_harness(two_nodes, config=CONFIG.replace("@DB@", ovs.db),
                           vswitches={"ovs": backend})
    devices = harness.wait_devices(
        VHOST, lambda d: len(d) == 3 and all(x.healthy for x in d.values()), timeout=10)
    # numaNodes auto: node 0 only, where OVS polls (and hugepages exist).
    assert sorted(devices) == ["vhostuser-ovs-n0-000", "vhostuser-ovs-n0-001",
                               "vhostuser-ovs-n0-002"]
    assert harness.agent.vswitches["ovs"] is backend

    ovs.stop_vswitchd()
    devices = harness.wait_devices(VHOST, lambda d: not any(x.healthy for x in d.values()),
                                   timeout=15)
    assert len(devices) == 3  # same IDs, Unhealthy
    reasons = next(p for p in harness.agent.status()["pools"])["unhealthy"]
    assert any("ovs-vswitchd" in reason for reason in reasons), reasons

    ovs.start_vswitchd()
    harness.wait_devices(VHOST, lambda d: len(d) == 3 and all(x.healthy for x in d.values()),
                         timeout=15)
