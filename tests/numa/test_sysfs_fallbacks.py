"""The fallbacks of discovery, each on its own: a node's CPUs from cpulist, cpumap or its
cpuN links; a kernel without NUMA; hex IDs with or without 0x; a netdev under virtio; a VF
whose PF is not listed. Each asserts the warnings exactly: none where nothing is odd."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.sysfs import HUGE_2M, NodeSpec, PciSpec, build_sysfs

import numa
from numa import nodes as numa_nodes

NODE0 = "devices/system/node/node0"


def node_tree(tmp_path: Path, *, numa_on: bool = True, pci: tuple[PciSpec, ...] = ()):
    spec = NodeSpec(id=0, cpus=frozenset({0, 1, 2, 3}), hugepages={HUGE_2M: (8, 4)})
    return build_sysfs(tmp_path / "sys", [spec], pci, numa=numa_on)


def drop(root: Path, *relative: str) -> None:
    for name in relative:
        os.unlink(root / name)


def drop_cpu_links(root: Path) -> None:
    for cpu in range(4):
        os.unlink(root / NODE0 / f"cpu{cpu}")


def only_memory_warnings(topo: numa.Topology) -> list[str]:
    return [w for w in topo.warnings if "memory size unknown" not in w]


# --- a node's CPUs --------------------------------------------------------------------------

def test_cpus_from_cpulist_alone(tmp_path: Path) -> None:
    fake = node_tree(tmp_path)
    drop(fake.root, f"{NODE0}/cpumap")
    drop_cpu_links(fake.root)
    topo = numa.discover(fake)
    assert topo.nodes[0].cpus == frozenset({0, 1, 2, 3})
    assert topo.warnings == ()


def test_cpus_from_cpumap_when_cpulist_is_missing(tmp_path: Path) -> None:
    fake = node_tree(tmp_path)
    drop(fake.root, f"{NODE0}/cpulist")
    drop_cpu_links(fake.root)
    assert numa.discover(fake).nodes[0].cpus == frozenset({0, 1, 2, 3})
    assert numa.discover(fake).warnings == ()


def test_a_bad_cpulist_is_warned_once_and_cpuN_links_answer(tmp_path: Path) -> None:
    fake = node_tree(tmp_path)
    (fake.root / NODE0 / "cpulist").write_text("zz\n")
    drop(fake.root, f"{NODE0}/cpumap")
    topo = numa.discover(fake)
    assert topo.nodes[0].cpus == frozenset({0, 1, 2, 3})
    assert topo.warnings == (
        f"{fake.root / NODE0 / 'cpulist'}: cpulist 'zz': bad item 'zz'; expected N or N-M "
        "(e.g. '0-3,8')",)


def test_a_bad_cpulist_alone_is_not_also_missing(tmp_path: Path) -> None:
    fake = node_tree(tmp_path)
    (fake.root / NODE0 / "cpulist").write_text("zz\n")
    drop(fake.root, f"{NODE0}/cpumap")
    drop_cpu_links(fake.root)
    topo = numa.discover(fake)
    assert topo.nodes[0].cpus == frozenset()
    assert len(topo.warnings) == 1
    assert "bad item 'zz'" in topo.warnings[0]


def test_no_cpu_source_at_all_is_warned(tmp_path: Path) -> None:
    fake = node_tree(tmp_path)
    drop(fake.root, f"{NODE0}/cpulist", f"{NODE0}/cpumap")
    drop_cpu_links(fake.root)
    topo = numa.discover(fake)
    assert topo.nodes[0].cpus == frozenset()
    assert topo.warnings == (
        f"{fake.root / NODE0 / 'cpulist'}: missing (no cpulist, cpumap or cpuN entries)",)


def test_a_missing_online_file_is_no_warning(tmp_path: Path) -> None:
    fake = node_tree(tmp_path)
    drop(fake.root, "devices/system/node/online")
    assert numa.discover(fake).warnings == ()


# --- hugepages ----------------------------------------------------------------------------

def test_an_odd_entry_before_the_sizes_does_not_hide_them(tmp_path: Path) -> None:
    fake = node_tree(tmp_path)
    odd = fake.root / NODE0 / "hugepages" / "aaa"
    odd.mkdir()
    topo = numa.discover(fake)
    assert topo.nodes[0].hugepages[HUGE_2M].total == 8
    assert topo.warnings == (f"{odd}: unexpected entry (expected hugepages-<size>kB)",)


@pytest.mark.parametrize(("total", "free"), [(4, -1), (-1, 0), (4, 5)])
def test_odd_hugepage_counts_are_shown_and_warned(tmp_path: Path, total: int,
                                                  free: int) -> None:
    fake = node_tree(tmp_path)
    size_dir = fake.root / NODE0 / "hugepages" / "hugepages-2048kB"
    (size_dir / "nr_hugepages").write_text(f"{total}\n")
    (size_dir / "free_hugepages").write_text(f"{free}\n")
    topo = numa.discover(fake)
    assert (topo.nodes[0].hugepages[HUGE_2M].total, topo.nodes[0].hugepages[HUGE_2M].free) == \
        (total, free)
    assert topo.warnings == (
        f"{size_dir}: odd counts: nr_hugepages={total} free_hugepages={free}",)


# --- a kernel without NUMA ----------------------------------------------------------------

def test_without_numa_the_online_file_names_the_cpus(tmp_path: Path) -> None:
    fake = node_tree(tmp_path, numa_on=False)
    (fake.root / "devices/system/cpu/online").write_text("0-7\n")  # cpu4..7 have no dirs
    topo = numa.discover(fake)
    assert [n.id for n in topo.nodes] == [0]
    assert topo.nodes[0].cpus == frozenset(range(8))
    assert only_memory_warnings(topo) == []


def test_without_numa_or_online_file_the_cpu_dirs_name_the_cpus(tmp_path: Path) -> None:
    fake = node_tree(tmp_path, numa_on=False)
    drop(fake.root, "devices/system/cpu/online")
    topo = numa.discover(fake)
    assert topo.nodes[0].cpus == frozenset({0, 1, 2, 3})
    assert topo.nodes[0].hugepages[HUGE_2M].total == 8
    assert topo.warnings == (
        f"{fake.root / 'devices/system/node'}: missing, memory size unknown",)
    assert topo.nodes[0].memory_total_kb is None and topo.nodes[0].memory_free_kb is None


def test_without_numa_and_without_cpus(tmp_path: Path) -> None:
    fake = node_tree(tmp_path, numa_on=False)
    drop(fake.root, "devices/system/cpu/online")
    for cpu in range(4):
        (fake.root / f"devices/system/cpu/cpu{cpu}").rename(fake.root / f"devices/system/c{cpu}")
    topo = numa.discover(fake)
    assert topo.nodes[0].cpus == frozenset()
    assert only_memory_warnings(topo) == [
        f"{fake.root / 'devices/system/cpu'}: no CPUs found (no online file, no cpuN entries)"]


def test_without_numa_on_the_live_sysfs_memory_comes_from_the_kernel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = node_tree(tmp_path, numa_on=False)
    monkeypatch.setattr(numa_nodes, "_is_live_sysfs", lambda root: True)
    memory = SimpleNamespace(total=4096 * 1024 + 1023, free=2048 * 1024 + 1)
    monkeypatch.setattr(numa_nodes.psutil, "virtual_memory", lambda: memory)
    topo = numa.discover(fake)
    assert (topo.nodes[0].memory_total_kb, topo.nodes[0].memory_free_kb) == (4096, 2048)
    assert topo.warnings == ()


def test_only_sys_itself_is_the_live_sysfs(tmp_path: Path) -> None:
    assert numa_nodes._is_live_sysfs(Path("/sys")) is True
    assert numa_nodes._is_live_sysfs(Path("/sys/.")) is True
    assert numa_nodes._is_live_sysfs(tmp_path) is False


def test_a_root_that_cannot_be_resolved_is_not_the_live_sysfs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # a relative root cannot be resolved without a working directory
    assert numa_nodes._is_live_sysfs(Path("sys")) is False


# --- PCI functions ------------------------------------------------------------------------

def nic(address: str = "0000:3b:00.0", **extra: object) -> PciSpec:
    return PciSpec(address=address, numa_node=0, driver="ice", netdev="ens1", **extra)


def test_an_odd_entry_before_the_functions_does_not_hide_them(tmp_path: Path) -> None:
    fake = node_tree(tmp_path, pci=(nic(),))
    odd = fake.root / "bus/pci/devices/0000-odd"
    odd.mkdir()
    topo = numa.discover(fake)
    assert [n.address for n in topo.nics] == ["0000:3b:00.0"]
    assert topo.warnings == (f"{odd}: not a PCI address (expected dddd:bb:dd.f)",)


def test_a_nic_without_sriov_has_no_vfs(tmp_path: Path) -> None:
    topo = numa.discover(node_tree(tmp_path, pci=(nic(),)))
    assert topo.nics[0].sriov_totalvfs == 0
    assert topo.nics[0].vfs == ()


@pytest.mark.parametrize(("text", "read"), [("0x8086", "8086"), ("8086", "8086"),
                                            ("0X15B3", "15b3"), ("1af4\n", "1af4")])
def test_hex_ids_with_or_without_0x(tmp_path: Path, text: str, read: str) -> None:
    fake = node_tree(tmp_path, pci=(nic(),))
    (fake.device_dir("0000:3b:00.0") / "vendor").write_text(text)
    topo = numa.discover(fake)
    assert topo.nics[0].vendor == read
    assert topo.warnings == ()


def test_a_hex_id_that_is_not_is_quoted_cut_short(tmp_path: Path) -> None:
    fake = node_tree(tmp_path, pci=(nic(),))
    garbage = "g" * 100
    (fake.device_dir("0000:3b:00.0") / "vendor").write_text(garbage)
    topo = numa.discover(fake)
    assert topo.nics[0].vendor == ""
    assert topo.warnings == (
        f"{fake.root / 'bus/pci/devices/0000:3b:00.0/vendor'}: not a hex id: {garbage[:40]!r}",)


def test_the_first_virtio_child_with_a_netdev_names_it(tmp_path: Path) -> None:
    spec = PciSpec(address="0000:00:03.0", numa_node=-1, vendor="1af4", device="1041",
                   driver="virtio-pci", netdev="eth0", virtio=True)
    fake = node_tree(tmp_path, pci=(spec,))
    (fake.device_dir("0000:00:03.0") / "virtio1").mkdir()  # a second child, no netdev
    (fake.device_dir("0000:00:03.0") / "virtio9" / "net" / "eth9").mkdir(parents=True)
    assert numa.discover(fake).nic("0000:00:03.0").netdev == "eth0"


def test_a_vf_whose_pf_is_not_listed_still_gets_its_pf_name(tmp_path: Path) -> None:
    vf = PciSpec(address="0000:3b:01.0", numa_node=0, device="1889", driver="vfio-pci",
                 iommu_group=31)
    fake = node_tree(tmp_path, pci=(nic(vfs=(vf,), totalvfs=4),))
    # The PF's class is unreadable: it is no NIC, but its VF still names it.
    (fake.device_dir("0000:3b:00.0") / "class").write_text("zz")
    topo = numa.discover(fake)
    assert [n.address for n in topo.nics] == ["0000:3b:01.0"]
    assert topo.nic("0000:3b:01.0").pf_name == "ens1"
    assert topo.nic("0000:3b:01.0").physfn == "0000:3b:00.0"


def test_a_function_listed_as_a_directory_not_a_link_has_no_pcie_root(tmp_path: Path) -> None:
    """bus/pci/devices/<addr> links into devices/pci<domain>:<bus>/...: the root complex is
    read from that link. A copied tree without the link still lists the NIC."""
    fake = node_tree(tmp_path, pci=(nic(), nic("0000:3c:00.0")))
    assert numa.discover(fake).nic("0000:3b:00.0").pcie_root == "pci0000:3b"
    listed = fake.root / "bus/pci/devices/0000:3b:00.0"
    real = listed.resolve()
    listed.unlink()
    listed.mkdir()
    for name in ("class", "vendor", "device", "numa_node"):
        (listed / name).write_text((real / name).read_text())
    topo = numa.discover(fake)
    assert topo.nic("0000:3b:00.0").pcie_root is None
    assert topo.nic("0000:3b:00.0").numa_node == 0
    assert topo.nic("0000:3c:00.0").pcie_root == "pci0000:3c"
