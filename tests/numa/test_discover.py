"""Discovery from synthetic sysfs trees laid out like the kernel's."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.sysfs import (
    HUGE_1G,
    HUGE_2M,
    FakeSysfs,
    NodeSpec,
    PciSpec,
    build_sysfs,
    four_nodes,
    one_node,
    two_nodes,
)

import numa
from numa import HugepageCount, Topology


def assert_matches_fixture(topo: Topology, fake: FakeSysfs) -> None:
    """Every node and NIC of the fixture, and nothing else, with the fixture's values."""
    assert topo.node_ids == tuple(sorted(n.id for n in fake.nodes))
    for spec in fake.nodes:
        node = topo.node(spec.id)
        assert node.cpus == spec.cpus
        assert node.memory_total_kb == spec.mem_total_kb
        assert node.memory_free_kb == spec.mem_free_kb
        assert dict(node.hugepages) == {
            size: HugepageCount(total, free) for size, (total, free) in spec.hugepages.items()
        }
    assert [n.address for n in topo.nics] == sorted(s.address for s in fake.nics)
    for ns in fake.nics:
        nic = topo.nic(ns.address)
        expected_node = ns.numa_node if isinstance(ns.numa_node, int) else None
        assert nic.numa_node == (None if expected_node == -1 else expected_node)
        assert (nic.driver, nic.vendor, nic.device) == (ns.driver, ns.vendor, ns.device)
        assert nic.netdev == ns.netdev
        assert nic.iommu_group == (None if ns.iommu_group is None else str(ns.iommu_group))
        assert nic.physfn == ns.physfn
        assert nic.vfs == tuple(vf.address for vf in ns.vfs)
        assert nic.dpdk_ready == ns.dpdk_ready
    assert topo.warnings == ()


@pytest.mark.parametrize("preset", [one_node, two_nodes, four_nodes])
def test_presets_are_discovered_exactly(tmp_path: Path, preset) -> None:
    fake = preset(tmp_path)
    assert_matches_fixture(numa.discover(fake), fake)


def test_built_from_a_node_count(tmp_path: Path) -> None:
    fake = build_sysfs(tmp_path, 3, cpus_per_node=4)
    topo = numa.discover(str(tmp_path))
    assert [sorted(n.cpus) for n in topo.nodes] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert topo.nics == ()
    assert_matches_fixture(topo, fake)


def test_two_nodes_details(tmp_path: Path) -> None:
    topo = numa.discover(two_nodes(tmp_path))
    assert topo.node(0).hugepage(HUGE_2M) == HugepageCount(total=1024, free=1000)
    assert topo.node(1).hugepage(HUGE_1G) == HugepageCount(total=4, free=4)
    assert topo.node(1).hugepage(64) == HugepageCount(0, 0)
    assert [n.id for n in topo.nodes_with_hugepages(HUGE_1G)] == [0, 1]
    assert topo.cpus == frozenset(range(16))
    with pytest.raises(KeyError, match="NUMA node 7 does not exist.*nodes: 0, 1"):
        topo.node(7)
    with pytest.raises(KeyError, match="0000:00:1f.2"):
        topo.nic("0000:00:1f.2")  # the SATA controller is no NIC


def test_nic_with_unknown_numa_node_is_not_node_0(tmp_path: Path) -> None:
    topo = numa.discover(two_nodes(tmp_path))
    virtio = topo.nic("0000:00:03.0")
    assert virtio.numa_node is None
    assert virtio.netdev == "eth0"  # found under virtio0/net/, as virtio-pci lays it out
    assert virtio not in topo.nics_on_node(0)
    assert topo.nics_on_node(None) == (virtio,)


def test_sriov_vfs_on_vfio(tmp_path: Path) -> None:
    topo = numa.discover(two_nodes(tmp_path))
    pf = topo.nic("0000:3b:00.0")
    assert pf.vfs == ("0000:3b:01.0", "0000:3b:01.1", "0000:3b:01.2")
    assert pf.sriov_totalvfs == 8
    assert (pf.is_vf, pf.pf_name, pf.dpdk_ready, pf.state) == (False, "ens1f0", False, "kernel")
    vf = topo.nic("0000:3b:01.0")
    assert vf.is_vf and vf.physfn == "0000:3b:00.0"
    assert (vf.driver, vf.vendor, vf.device) == ("vfio-pci", "8086", "1889")
    assert vf.netdev is None
    assert vf.iommu_group == "31" and vf.vfio_device == "/dev/vfio/31"
    assert vf.pf_name == "ens1f0" and vf.dpdk_ready and vf.state == "dpdk"
    kernel_vf = topo.nic("0000:3b:01.2")
    assert (kernel_vf.driver, kernel_vf.netdev, kernel_vf.vfio_device) == (
        "iavf", "ens1f0v2", None)
    assert not kernel_vf.dpdk_ready
    # A PF bound to vfio-pci has no netdev, so no name for pfNames selectors either.
    x710 = topo.nic("0000:af:00.1")
    assert x710.dpdk_ready and x710.pf_name is None and x710.numa_node == 1


def test_four_nodes_hugepages_and_nics(tmp_path: Path) -> None:
    topo = numa.discover(four_nodes(tmp_path))
    assert [n.id for n in topo.nodes_with_hugepages(HUGE_1G)] == [0, 2]
    assert [n.id for n in topo.nodes_with_hugepages(HUGE_2M)] == [0, 1, 2, 3]
    assert [n.address for n in topo.nics_on_node(2)] == ["0000:98:00.0", "0000:98:01.0"]
    assert topo.nics_on_node(1) == () and topo.nics_on_node(3) == ()


def test_kernel_without_numa_is_one_node_with_all_cpus(tmp_path: Path) -> None:
    nodes = [NodeSpec(id=0, cpus=frozenset(range(6)),
                      hugepages={HUGE_2M: (128, 100), HUGE_1G: (1, 0)})]
    build_sysfs(tmp_path, nodes, [PciSpec(address="0000:02:00.0", numa_node=-1,
                                          driver="ixgbe", device="10fb", netdev="eth1")],
                numa=False)
    assert not (tmp_path / "devices" / "system" / "node").exists()
    topo = numa.discover(tmp_path)
    assert topo.node_ids == (0,)
    node = topo.node(0)
    assert node.cpus == frozenset(range(6))
    # hugepages come from the global pools in kernel/mm/hugepages
    assert dict(node.hugepages) == {HUGE_2M: HugepageCount(128, 100), HUGE_1G: HugepageCount(1, 0)}
    assert node.memory_total_kb is None  # no per-node meminfo, and this is not the live /sys
    assert any("memory size unknown" in w for w in topo.warnings)
    assert topo.nic("0000:02:00.0").numa_node is None


def test_kernel_without_numa_falls_back_to_cpu_directories(tmp_path: Path) -> None:
    build_sysfs(tmp_path, [NodeSpec(id=0, cpus=frozenset({0, 1, 2}))], numa=False)
    (tmp_path / "devices" / "system" / "cpu" / "online").unlink()
    assert numa.discover(tmp_path).node(0).cpus == {0, 1, 2}


def test_cpu_less_memory_node(tmp_path: Path) -> None:
    # CXL / HBM memory shows up as a node without CPUs; its cpulist is an empty line.
    nodes = [NodeSpec(id=0, cpus=frozenset({0, 1})), NodeSpec(id=1, cpus=frozenset())]
    fake = build_sysfs(tmp_path, nodes)
    topo = numa.discover(fake)
    assert topo.node(1).cpus == frozenset()
    assert topo.node(1).memory_total_kb == nodes[1].mem_total_kb
    assert topo.warnings == ()


def test_sparse_node_ids(tmp_path: Path) -> None:
    nodes = [NodeSpec(id=0, cpus=frozenset({0, 1})), NodeSpec(id=2, cpus=frozenset({2, 3}))]
    fake = build_sysfs(tmp_path, nodes)
    topo = numa.discover(fake)
    assert topo.node_ids == (0, 2)
    assert_matches_fixture(topo, fake)


def test_cpus_from_cpumap_when_cpulist_is_missing(tmp_path: Path) -> None:
    nodes = [NodeSpec(id=0, cpus=frozenset({0, 1})), NodeSpec(id=1, cpus=frozenset({33, 40}))]
    fake = build_sysfs(tmp_path, nodes)
    assert (fake.path("devices/system/node/node1/cpumap").read_text().strip()
            == "00000102,00000000")
    fake.path("devices/system/node/node1/cpulist").unlink()
    topo = numa.discover(fake)
    assert topo.node(1).cpus == {33, 40}
    assert topo.warnings == ()


def test_noiommu_vfio_device_node(tmp_path: Path) -> None:
    build_sysfs(tmp_path, 1, [PciSpec(address="0000:05:00.0", driver="vfio-pci",
                                      iommu_group=7, noiommu=True)])
    nic = numa.discover(tmp_path).nic("0000:05:00.0")
    assert nic.vfio_device == "/dev/vfio/noiommu-7"
    assert nic.dpdk_ready


@pytest.mark.parametrize(
    ("driver", "group", "ready", "state"),
    [
        ("vfio-pci", 3, True, "dpdk"),
        ("vfio-pci", None, False, "no-iommu-group"),
        ("uio_pci_generic", None, True, "dpdk"),  # uio does not use the IOMMU
        ("igb_uio", None, True, "dpdk"),
        (None, 3, False, "unbound"),
        ("ixgbe", 3, False, "kernel"),
    ],
)
def test_dpdk_readiness(tmp_path: Path, driver, group, ready, state) -> None:
    build_sysfs(tmp_path, 1, [PciSpec(address="0000:05:00.0", driver=driver,
                                      iommu_group=group)])
    nic = numa.discover(tmp_path).nic("0000:05:00.0")
    assert (nic.dpdk_ready, nic.state) == (ready, state)
    assert nic.vfio_device == (f"/dev/vfio/{group}" if driver == "vfio-pci" and group else None)


def test_rebind_and_hot_remove_are_seen_on_the_next_discover(tmp_path: Path) -> None:
    fake = one_node(tmp_path)
    fake.bind("0000:01:01.0", "iavf", netdev="enp1s0f0v0")
    nic = numa.discover(fake).nic("0000:01:01.0")
    assert (nic.driver, nic.netdev, nic.dpdk_ready) == ("iavf", "enp1s0f0v0", False)
    fake.bind("0000:01:01.0", "vfio-pci")
    nic = numa.discover(fake).nic("0000:01:01.0")
    assert (nic.driver, nic.netdev, nic.dpdk_ready) == ("vfio-pci", None, True)
    fake.remove_pci("0000:01:01.1")
    fake.add_pci(PciSpec(address="0000:81:00.0", numa_node=0, device="1572", driver="i40e",
                         netdev="ens5f0"))
    topo = numa.discover(fake)
    assert "0000:01:01.1" not in [n.address for n in topo.nics]
    assert topo.nic("0000:81:00.0").netdev == "ens5f0"


def test_hugepage_changes_are_seen(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    fake.set_hugepages(1, HUGE_2M, 2048, 2000)
    topo = numa.discover(fake)
    assert topo.node(1).hugepage(HUGE_2M) == HugepageCount(2048, 2000)
    global_2m = fake.path("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages").read_text()
    assert int(global_2m) == 1024 + 2048


def test_nodes_only_discovery_leaves_the_pci_bus_alone(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    fake.path("bus/pci/devices/0000:af:00.0/numa_node").write_text("banana\n")
    full = numa.discover(fake)
    nodes_only = numa.discover(fake, nics=False)
    assert nodes_only.nodes == full.nodes
    assert nodes_only.nics == ()
    # The NIC's odd numa_node is only seen when the NICs are read.
    assert len(full.warnings) == 1 and nodes_only.warnings == ()
    assert numa.cpus_to_nodes(numa.parse_cpulist("3,12"), nodes_only) == {0, 1}


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="not a directory.*normally /sys"):
        numa.discover(tmp_path / "nope")
