"""Is a slot usable right now? One rule per kind, each answer carrying a reason for a person.

- socket slots: their vSwitch answers and is healthy, hugepages of the configured size
  exist on the slot's NUMA node, and the hugetlbfs directory that Allocate mounts exists;
- NICs: still present and bound to vfio-pci with an IOMMU group (what Allocate hands out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deviceplugin.config import HugepagesConfig
from deviceplugin.slots import Slot
from numa.model import VFIO_DRIVER, Topology


@dataclass(frozen=True)
class VSwitchState:
    """What the agent knows about one vSwitch at one moment."""

    name: str
    healthy: bool
    reason: str = ""
    poll_nodes: frozenset[int] | None = None  # None: unknown (down, or it cannot tell)


@dataclass(frozen=True)
class SlotHealth:
    healthy: bool
    reason: str = ""


HEALTHY = SlotHealth(True)


def slot_health(slot: Slot, topology: Topology, vswitches: Mapping[str, VSwitchState],
                hugepages: HugepagesConfig, hugepages_dir_present: bool) -> SlotHealth:
    if slot.kind == "dpdk-nic":
        return _nic_health(slot, topology)
    state = vswitches.get(slot.vswitch or "")
    if state is None:
        return SlotHealth(False, f"vSwitch {slot.vswitch} is not connected")
    if not state.healthy:
        return SlotHealth(False, f"vSwitch {slot.vswitch}: {state.reason or 'unhealthy'}")
    if slot.numa_node is not None and hugepages.required:
        try:
            pages = topology.node(slot.numa_node).hugepage(hugepages.page_size_kb)
        except KeyError:
            return SlotHealth(False, f"NUMA node {slot.numa_node} is gone")
        if pages.total <= 0:
            return SlotHealth(False, f"no {hugepages.page_size} hugepages on NUMA node "
                                     f"{slot.numa_node}")
    if not hugepages_dir_present:
        return SlotHealth(False, f"hugepages directory {hugepages.path} does not exist")
    return HEALTHY


def hugepages_dir_present(path: Path) -> bool:
    return Path(path).is_dir()


def _nic_health(slot: Slot, topology: Topology) -> SlotHealth:
    try:
        nic = topology.nic(slot.pci_address or slot.device_id)
    except KeyError:
        return SlotHealth(False, f"NIC {slot.device_id} is gone from the PCI bus")
    if nic.driver != VFIO_DRIVER:
        bound = f"bound to {nic.driver}" if nic.driver else "not bound to any driver"
        return SlotHealth(False, f"NIC {nic.address} is {bound}: bind it to {VFIO_DRIVER}")
    if nic.iommu_group is None:
        return SlotHealth(False, f"NIC {nic.address} has no IOMMU group: enable the IOMMU")
    return HEALTHY
