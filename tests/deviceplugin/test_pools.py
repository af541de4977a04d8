"""Slots per NUMA node from config + synthetic sysfs (2 and 4 nodes) + vSwitch placement."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.sysfs import HUGE_1G, four_nodes, two_nodes

import numa
from agent.config_file import parse_config
from deviceplugin import naming
from deviceplugin.health import VSwitchState
from deviceplugin.manager import ResourceManager
from deviceplugin.pools import plan_pools

RUN = Path("/run/numanet")


def socket_pool(name: str = "vh", **extra: object) -> dict:
    return {"name": name, "kind": "vhost-user", "vswitch": "ovs", "slotsPerNode": 3, **extra}


def test_two_nodes_auto_without_placement_uses_every_node_with_hugepages(tmp_path: Path,
                                                                         caplog) -> None:
    topology = numa.discover(two_nodes(tmp_path))
    config = parse_config({"pools": [socket_pool()]})
    plan = plan_pools(config, topology, {"ovs": None}, RUN)["vh"]
    assert plan.nodes == (0, 1)
    assert [s.device_id for s in plan.slots] == [
        "vh-n0-000", "vh-n0-001", "vh-n0-002", "vh-n1-000", "vh-n1-001", "vh-n1-002"]
    assert "not known yet, so all nodes with 2Mi hugepages: 0,1" in plan.note
    slot = plan.slots[4]
    assert (slot.numa_node, slot.index, slot.kind, slot.vswitch) == (1, 1, "vhost-user", "ovs")
    assert slot.container_role == "server"
    assert slot.host_dir == RUN / "s" / "vh-n1-001"
    assert slot.host_socket == RUN / "s" / "vh-n1-001" / "sock"
    assert slot.container_dir == Path("/run/numanet/vh/vh-n1-001")
    assert slot.resource == "numanet.io/vh"


def test_four_nodes_auto_intersects_polling_nodes_with_hugepage_nodes(tmp_path: Path) -> None:
    topology = numa.discover(four_nodes(tmp_path))
    config = parse_config({"hugepages": {"pageSize": "1Gi"},
                           "pools": [socket_pool(), socket_pool("mf", kind="memif",
                                                                vswitch="vpp")]})
    # 1G pages exist on nodes 0 and 2 only; OVS polls on 1 and 2; VPP on all four.
    plans = plan_pools(config, topology, {"ovs": frozenset({1, 2}),
                                          "vpp": frozenset({0, 1, 2, 3})}, RUN)
    assert plans["vh"].nodes == (2,)
    assert {s.numa_node for s in plans["vh"].slots} == {2}
    assert "polls on 1,2 and 1Gi hugepages exist on 0,2" in plans["vh"].note
    assert plans["mf"].nodes == (0, 2)
    assert plans["mf"].slots[0].container_role == "slave"
    assert plans["mf"].slots[0].memif_mode == "ethernet"


def test_ring_and_buffer_sizes_of_a_pool_are_on_each_of_its_slots(tmp_path: Path) -> None:
    topology = numa.discover(two_nodes(tmp_path))
    config = parse_config({"pools": [
        socket_pool("mf", kind="memif", vswitch="vpp", ringSize=2048, bufferSize=4096),
        socket_pool("vh", ringSize=256),
        socket_pool("plain"),
    ]})
    plans = plan_pools(config, topology, {"ovs": None, "vpp": None}, RUN)
    assert {(s.ring_size, s.buffer_size) for s in plans["mf"].slots} == {(2048, 4096)}
    assert {(s.ring_size, s.buffer_size) for s in plans["vh"].slots} == {(256, None)}
    # Not configured: None, so the vSwitch (and the container) keep their defaults.
    assert {(s.ring_size, s.buffer_size) for s in plans["plain"].slots} == {(None, None)}


def test_auto_with_no_matching_node_says_how_to_fix(tmp_path: Path) -> None:
    topology = numa.discover(four_nodes(tmp_path))
    config = parse_config({"hugepages": {"pageSize": "1Gi"}, "pools": [socket_pool()]})
    plan = plan_pools(config, topology, {"ovs": frozenset({3})}, RUN)["vh"]
    assert plan.slots == ()
    assert "no slots (configure 1Gi hugepages on the vSwitch's nodes)" in plan.note


def test_explicit_numa_nodes_skip_missing_ones(tmp_path: Path) -> None:
    topology = numa.discover(two_nodes(tmp_path))
    config = parse_config({"pools": [socket_pool(numaNodes=[1, 5])]})
    plan = plan_pools(config, topology, {"ovs": frozenset({0})}, RUN)["vh"]
    assert plan.nodes == (1,)
    assert "node(s) 5 do not exist on this machine (nodes: 0,1)" in plan.note


def test_nic_pools_first_match_wins_and_unknown_numa_has_no_node(tmp_path: Path) -> None:
    topology = numa.discover(two_nodes(tmp_path))
    config = parse_config({"pools": [
        {"name": "e810", "kind": "dpdk-nic", "selectors": {"devices": ["1889"],
                                                           "drivers": ["vfio-pci"]}},
        {"name": "any-intel", "kind": "dpdk-nic", "selectors": {"vendors": ["8086"]}},
        {"name": "virtio", "kind": "dpdk-nic", "selectors": {"vendors": ["1af4"]}},
    ]})
    plans = plan_pools(config, topology, {}, RUN)
    assert [s.device_id for s in plans["e810"].slots] == ["0000:3b:01.0", "0000:3b:01.1"]
    # The E810 VFs went to the first pool; the rest of Intel's functions come here
    # (the iavf VF, the ice PF, the X710), each exactly once.
    assert [s.device_id for s in plans["any-intel"].slots] == [
        "0000:3b:00.0", "0000:3b:01.2", "0000:af:00.1"]
    vf = plans["e810"].slots[0]
    assert (vf.numa_node, vf.pci_address, vf.iommu_group, vf.pf_pci_address) == \
        (0, "0000:3b:01.0", "31", "0000:3b:00.0")
    assert plans["any-intel"].slots[2].numa_node == 1
    virtio = plans["virtio"].slots[0]
    assert virtio.device_id == "0000:00:03.0" and virtio.numa_node is None


def test_pf_name_and_address_selectors(tmp_path: Path) -> None:
    topology = numa.discover(two_nodes(tmp_path))
    config = parse_config({"pools": [
        {"name": "by-pf", "kind": "dpdk-nic", "selectors": {"pfNames": ["ens1f0"],
                                                            "drivers": ["vfio-pci"]}},
        {"name": "by-addr", "kind": "dpdk-nic", "selectors": {"pciAddresses": ["0000:af:00.1"]}},
    ]})
    plans = plan_pools(config, topology, {}, RUN)
    assert [s.device_id for s in plans["by-pf"].slots] == ["0000:3b:01.0", "0000:3b:01.1"]
    assert [s.device_id for s in plans["by-addr"].slots] == ["0000:af:00.1"]


def vswitch(name: str, healthy: bool = True, nodes: frozenset[int] | None = None) -> VSwitchState:
    return VSwitchState(name, healthy, "" if healthy else "down", nodes)


def test_manager_health_and_generations(tmp_path: Path) -> None:
    fake = four_nodes(tmp_path / "sys")
    pages = tmp_path / "hugepages"
    pages.mkdir()
    config = parse_config({"hugepages": {"path": str(pages)}, "pools": [socket_pool()]})
    manager = ResourceManager(tmp_path / "run")
    seen: list[frozenset[str]] = []
    manager.subscribe(seen.append)
    result = manager.update(config, numa.discover(fake), {"ovs": vswitch("ovs")})
    assert result.added == {"vh"} and result.changed == {"vh"}
    view = manager.pool("vh")
    assert view is not None and len(view.devices) == 12
    assert all(d.health.healthy for d in view.devices)
    first = view.generation

    # Same inputs: no new generation, no notification.
    result = manager.update(config, numa.discover(fake), {"ovs": vswitch("ovs")})
    assert result.changed == frozenset() and manager.pool("vh").generation == first
    assert seen == [frozenset({"vh"})]

    # vSwitch down: every slot Unhealthy with its reason; placement unknown keeps the IDs.
    manager.update(config, numa.discover(fake), {"ovs": vswitch("ovs", healthy=False)})
    view = manager.pool("vh")
    assert view.generation > first
    assert {d.health.reason for d in view.devices} == {"vSwitch ovs: down"}

    # Hugepages gone on node 3: with numaNodes auto that node has no slots any more...
    fake.set_hugepages(3, 2048, 0, 0)
    manager.update(config, numa.discover(fake), {"ovs": vswitch("ovs")})
    assert {d.slot.numa_node for d in manager.pool("vh").devices} == {0, 1, 2}
    # ...with the nodes listed, its slots stay and turn Unhealthy, saying why.
    config = parse_config({"hugepages": {"path": str(pages)},
                           "pools": [socket_pool(numaNodes=[0, 1, 2, 3])]})
    manager.update(config, numa.discover(fake), {"ovs": vswitch("ovs")})
    bad = {d.device_id: d.health.reason for d in manager.pool("vh").devices
           if not d.health.healthy}
    assert bad == {f"vh-n3-{i:03d}": "no 2Mi hugepages on NUMA node 3" for i in range(3)}

    # The hugetlbfs directory disappears: every slot says so.
    pages.rmdir()
    manager.update(config, numa.discover(fake), {"ovs": vswitch("ovs")})
    assert all("does not exist" in d.health.reason or "NUMA node 3" in d.health.reason
               for d in manager.pool("vh").devices)

    # SlotLookup for the CNI.
    assert manager.slot("vh-n2-001").numa_node == 2
    assert manager.slot("vh-n9-001") is None
    assert manager.pool_resource("vh") == "numanet.io/vh"
    assert manager.pool_resource("nope") is None


def test_manager_nic_health_follows_the_driver(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path / "sys")
    config = parse_config({"pools": [{"name": "nic", "kind": "dpdk-nic",
                                      "selectors": {"vendors": ["8086"], "devices": ["1889"]}}]})
    manager = ResourceManager(tmp_path / "run")
    manager.update(config, numa.discover(fake), {})
    health = {d.device_id: d.health for d in manager.pool("nic").devices}
    assert health["0000:3b:01.0"].healthy
    assert health["0000:3b:01.2"].reason == \
        "NIC 0000:3b:01.2 is bound to iavf: bind it to vfio-pci"
    fake.bind("0000:3b:01.0", None)
    manager.update(config, numa.discover(fake), {})
    assert manager.device("0000:3b:01.0").health.reason == \
        "NIC 0000:3b:01.0 is not bound to any driver: bind it to vfio-pci"
    fake.remove_pci("0000:3b:01.1")
    manager.update(config, numa.discover(fake), {})
    assert manager.device("0000:3b:01.1") is None


@pytest.mark.parametrize("page_size,expected", [("2Mi", (0, 1, 2, 3)), ("1Gi", (0, 2))])
def test_four_node_page_sizes(tmp_path: Path, page_size: str, expected: tuple[int, ...]) -> None:
    topology = numa.discover(four_nodes(tmp_path))
    assert {n.id for n in topology.nodes_with_hugepages(HUGE_1G)} == {0, 2}
    config = parse_config({"hugepages": {"pageSize": page_size}, "pools": [socket_pool()]})
    plan = plan_pools(config, topology, {"ovs": None}, RUN)["vh"]
    assert plan.nodes == expected
    assert all(naming.parse_slot_id(s.device_id)[1] in expected for s in plan.slots)
