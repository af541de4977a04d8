"""Odd, missing and unreadable sysfs entries give warnings, never exceptions."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from helpers.sysfs import HUGE_1G, HUGE_2M, NodeSpec, PciSpec, build_sysfs, two_nodes

import numa
from numa.report import format_table, topology_to_dict

NODE0 = "devices/system/node/node0"
VF = "bus/pci/devices/0000:3b:01.0"  # warnings name the path under bus/pci


def warnings_about(topo: numa.Topology, path: Path) -> list[str]:
    return [w for w in topo.warnings if w.startswith(f"{path}: ")]


@pytest.mark.parametrize("garbage", ["garbage", "", "0x1", "1.5", "\x00\xff"])
def test_garbage_numa_node_is_unknown_with_a_warning(tmp_path: Path, garbage: str) -> None:
    fake = two_nodes(tmp_path)
    path = fake.path(f"{VF}/numa_node")
    path.write_text(garbage)
    topo = numa.discover(fake)
    assert topo.nic("0000:3b:01.0").numa_node is None
    (warning,) = warnings_about(topo, path)
    assert "not an integer" in warning
    # the rest of the NIC is still read
    assert topo.nic("0000:3b:01.0").vfio_device == "/dev/vfio/31"


def test_numa_node_naming_a_missing_node(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    path = fake.path(f"{VF}/numa_node")
    path.write_text("5\n")
    topo = numa.discover(fake)
    assert topo.nic("0000:3b:01.0").numa_node == 5
    assert warnings_about(topo, path) == [f"{path}: names NUMA node 5, which does not exist here"]
    assert "NUMA node 5 (named by a NIC, not present)" in format_table(topo)


def test_missing_numa_node_file_is_unknown_without_warning(tmp_path: Path) -> None:
    # Kernels built without NUMA have no numa_node attribute at all.
    fake = two_nodes(tmp_path)
    fake.path(f"{VF}/numa_node").unlink()
    topo = numa.discover(fake)
    assert topo.nic("0000:3b:01.0").numa_node is None
    assert topo.warnings == ()


def test_missing_meminfo(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    path = fake.path(f"{NODE0}/meminfo")
    path.unlink()
    topo = numa.discover(fake)
    node = topo.node(0)
    assert (node.memory_total_kb, node.memory_free_kb) == (None, None)
    assert warnings_about(topo, path) == [f"{path}: missing"]
    assert node.cpus == fake.node_spec(0).cpus  # the rest of the node is intact
    assert "memory ? free of ?" in format_table(topo)


def test_meminfo_without_memfree(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    path = fake.path(f"{NODE0}/meminfo")
    path.write_text("Node 0 MemTotal:  1024 kB\nNode 0 Bogus: x\n")
    topo = numa.discover(fake)
    assert (topo.node(0).memory_total_kb, topo.node(0).memory_free_kb) == (1024, None)
    assert warnings_about(topo, path) == [f"{path}: no MemFree line"]


def test_unreadable_file_is_a_warning(tmp_path: Path) -> None:
    # A directory where a file belongs: open() fails like an unreadable attribute.
    fake = two_nodes(tmp_path)
    path = fake.path(f"{NODE0}/hugepages/hugepages-1048576kB/nr_hugepages")
    path.unlink()
    path.mkdir()
    topo = numa.discover(fake)
    assert warnings_about(topo, path) == [f"{path}: unreadable (not a regular file)"]
    # a size that cannot be counted is not offered; the other size still is
    assert HUGE_1G not in topo.node(0).hugepages
    assert topo.node(0).hugepage(HUGE_2M).total == 1024


def test_permission_denied_by_the_kernel(tmp_path: Path) -> None:
    # Write-only sysfs attributes refuse reads even to root: a real "Permission denied".
    write_only = Path("/sys/bus/pci/rescan")
    if not write_only.exists():
        pytest.skip("no /sys/bus/pci/rescan on this machine")
    try:
        write_only.read_bytes()
        pytest.skip("/sys/bus/pci/rescan is readable here")
    except PermissionError:
        pass
    fake = two_nodes(tmp_path)
    path = fake.path(f"{NODE0}/meminfo")
    path.unlink()
    path.symlink_to(write_only)
    topo = numa.discover(fake)
    assert warnings_about(topo, path) == [f"{path}: unreadable (Permission denied)"]
    assert topo.node(0).memory_total_kb is None


def test_fifo_does_not_block(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    path = fake.path(f"{VF}/numa_node")
    path.unlink()
    os.mkfifo(path)
    result: list[numa.Topology] = []
    reader = threading.Thread(target=lambda: result.append(numa.discover(fake)), daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # unblock the reader before failing
        with open(path, "w"):
            pass
        pytest.fail("discover blocked on a FIFO")
    assert warnings_about(result[0], path) == [f"{path}: unreadable (not a regular file)"]


def test_garbage_cpulist_falls_back_to_cpumap(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    path = fake.path(f"{NODE0}/cpulist")
    path.write_text("0-3,zz\n")
    topo = numa.discover(fake)
    assert topo.node(0).cpus == fake.node_spec(0).cpus
    (warning,) = warnings_about(topo, path)
    assert "bad item 'zz'" in warning


def test_no_cpu_information_at_all(tmp_path: Path) -> None:
    fake = build_sysfs(tmp_path, [NodeSpec(id=0, cpus=frozenset({0, 1}))])
    node_dir = fake.path(NODE0)
    for name in ("cpulist", "cpumap", "cpu0", "cpu1"):
        (node_dir / name).unlink()
    topo = numa.discover(fake)
    assert topo.node(0).cpus == frozenset()
    assert any("no cpulist, cpumap or cpuN entries" in w for w in topo.warnings)


def test_odd_hugepage_entries(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    base = fake.path(f"{NODE0}/hugepages")
    (base / "hugepages-lots").mkdir()
    (fake.path(f"{NODE0}/hugepages/hugepages-2048kB/free_hugepages")).write_text("2000\n")
    topo = numa.discover(fake)
    assert warnings_about(topo, base / "hugepages-lots") == [
        f"{base / 'hugepages-lots'}: unexpected entry (expected hugepages-<size>kB)"]
    # more free than total is shown as the kernel says, with a warning
    assert topo.node(0).hugepage(HUGE_2M).free == 2000
    assert any("odd counts: nr_hugepages=1024 free_hugepages=2000" in w for w in topo.warnings)


def test_node_online_disagrees_with_directories(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    path = fake.path("devices/system/node/online")
    path.write_text("0-2\n")
    topo = numa.discover(fake)
    assert topo.node_ids == (0, 1)
    assert warnings_about(topo, path) == [
        f"{path}: says nodes '0-2' are online but found directories for [0, 1]"]


def test_pci_oddities(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    devices = fake.path("bus/pci/devices")
    (devices / "not-an-address").mkdir()
    fake.path("devices/pci0000:af/0000:af:00.0/class").unlink()
    fake.path("devices/pci0000:af/0000:af:00.1/vendor").write_text("intel\n")
    driver = fake.path(f"{VF}/driver")
    driver.unlink()
    driver.write_text("vfio-pci\n")  # a file where the kernel has a symlink
    topo = numa.discover(fake)
    addresses = [n.address for n in topo.nics]
    assert "0000:af:00.0" not in addresses  # no class: cannot tell it is a NIC
    assert topo.nic("0000:af:00.1").vendor == ""
    assert topo.nic("0000:3b:01.0").driver is None
    text = "\n".join(topo.warnings)
    assert f"{devices / 'not-an-address'}: not a PCI address" in text
    assert "0000:af:00.0/class: missing" in text
    assert "0000:af:00.1/vendor: not a hex id: 'intel'" in text
    assert f"{driver}: expected a symlink" in text


def test_pci_devices_is_not_a_directory(tmp_path: Path) -> None:
    fake = build_sysfs(tmp_path, 1)
    devices = fake.path("bus/pci/devices")
    devices.rmdir()
    devices.write_text("")
    topo = numa.discover(fake)
    assert topo.nics == ()
    assert warnings_about(topo, devices) == [f"{devices}: not a directory"]


def test_vf_whose_pf_is_gone(tmp_path: Path) -> None:
    build_sysfs(tmp_path, 1, [PciSpec(address="0000:05:00.1", driver="vfio-pci", device="1889",
                                      iommu_group=9, physfn="0000:05:00.0")])
    (tmp_path / "devices/pci0000:05/0000:05:00.1/physfn").symlink_to("../0000:05:00.0")
    nic = numa.discover(tmp_path).nic("0000:05:00.1")
    assert nic.physfn == "0000:05:00.0" and nic.pf_name is None


def _corruptions(path: Path):
    """Ways a sysfs entry can be odd: each yields after corrupting, then restores."""
    if path.is_symlink():
        target = os.readlink(path)
        for corrupt in ("dangling", "file"):
            path.unlink()
            if corrupt == "dangling":
                path.symlink_to("../nowhere/at/all")
            else:
                path.write_text("junk\n")
            yield corrupt
            path.unlink()
            path.symlink_to(target)
        return
    original = path.read_bytes()
    for corrupt in ("empty", "garbage", "huge", "dir", "missing"):
        path.unlink()
        if corrupt == "empty":
            path.write_bytes(b"")
        elif corrupt == "garbage":
            path.write_bytes(b"\xff\xfe-1-\n,,0x")
        elif corrupt == "huge":
            path.write_bytes(b"9" * 100_000)
        elif corrupt == "dir":
            path.mkdir()
        yield corrupt
        if path.is_dir():
            path.rmdir()
        elif path.exists():
            path.unlink()
        path.write_bytes(original)


def test_no_single_corruption_raises(tmp_path: Path) -> None:
    """Every file and link of the 2-node tree, corrupted in every way: still a Topology."""
    fake = two_nodes(tmp_path / "sys")
    entries = sorted(p for p in fake.root.rglob("*") if p.is_symlink() or p.is_file())
    assert len(entries) > 100
    checked = 0
    for entry in entries:
        for corrupt in _corruptions(entry):
            try:
                topo = numa.discover(fake)
                json.dumps(topology_to_dict(topo))
                format_table(topo)
            except Exception as exc:  # pragma: no cover - the failure report
                pytest.fail(f"{entry} ({corrupt}): {type(exc).__name__}: {exc}")
            checked += 1
    assert checked > 400
    # and everything was put back
    shutil.copytree(fake.root, tmp_path / "copy", symlinks=True)
    assert numa.discover(tmp_path / "copy").warnings == ()
