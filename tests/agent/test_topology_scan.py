"""The agent's topology rounds on a kernel-like sysfs tree: hugepages every round, NICs on
udev events and at the backstop interval, every round without udev."""

from __future__ import annotations

import time
from pathlib import Path

from helpers.sysfs import HUGE_2M, PciSpec, two_nodes

from agent.topology_scan import TopologyScanner

NEW_NIC = PciSpec(address="0000:d8:00.0", numa_node=1, vendor="8086", device="1592",
                  driver="vfio-pci", iommu_group=90)


def addresses(scanner: TopologyScanner) -> set[str]:
    return {nic.address for nic in scanner.scan().nics}


def test_without_udev_every_round_reads_the_nics(tmp_path: Path) -> None:
    sysfs = two_nodes(tmp_path / "sys")
    scanner = TopologyScanner(sysfs.root, nic_interval=3600)
    assert NEW_NIC.address not in addresses(scanner)
    sysfs.add_pci(NEW_NIC)
    assert NEW_NIC.address in addresses(scanner)


def test_with_udev_nics_are_read_again_on_an_event(tmp_path: Path) -> None:
    sysfs = two_nodes(tmp_path / "sys")
    scanner = TopologyScanner(sysfs.root, nic_interval=3600)
    scanner.events = True
    first = scanner.scan()
    sysfs.add_pci(NEW_NIC)
    sysfs.set_hugepages(1, HUGE_2M, total=256, free=100)
    second = scanner.scan()
    # No event yet: the NICs are the last scan's, the hugepages are today's.
    assert second.nics == first.nics
    assert second.node(1).hugepages[HUGE_2M].free == 100
    scanner.nics_changed()
    assert NEW_NIC.address in addresses(scanner)
    sysfs.remove_pci(NEW_NIC.address)
    scanner.nics_changed()
    assert NEW_NIC.address not in addresses(scanner)


def test_with_udev_nics_are_read_again_after_the_backstop_interval(tmp_path: Path) -> None:
    sysfs = two_nodes(tmp_path / "sys")
    scanner = TopologyScanner(sysfs.root, nic_interval=0.2)
    scanner.events = True
    scanner.scan()
    sysfs.add_pci(NEW_NIC)  # udev dropped this event
    assert NEW_NIC.address not in addresses(scanner)
    time.sleep(0.25)
    assert NEW_NIC.address in addresses(scanner)


def test_nic_warnings_outlive_the_rounds_that_skip_the_nics(tmp_path: Path) -> None:
    sysfs = two_nodes(tmp_path / "sys")
    sysfs.add_pci(PciSpec(address="0000:d9:00.0", numa_node="banana", driver="ice",
                          netdev="bad0"))
    scanner = TopologyScanner(sysfs.root, nic_interval=3600)
    scanner.events = True
    full = scanner.scan()
    assert any("0000:d9:00.0" in w for w in full.warnings), full.warnings
    assert scanner.scan().warnings == full.warnings
