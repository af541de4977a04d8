"""The records ``numa.discover`` returns. Plain frozen data: safe to share between threads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Drivers that hand a device to userspace. vfio-pci needs an IOMMU group to be usable;
# the uio drivers do not use the IOMMU at all.
VFIO_DRIVER = "vfio-pci"
UIO_DRIVERS = frozenset({"uio_pci_generic", "igb_uio"})
DPDK_DRIVERS = UIO_DRIVERS | {VFIO_DRIVER}


@dataclass(frozen=True)
class HugepageCount:
    total: int
    free: int


@dataclass(frozen=True)
class NumaNode:
    id: int
    cpus: frozenset[int]
    memory_total_kb: int | None  # None: the kernel did not say (warning given)
    memory_free_kb: int | None
    # page size in KiB -> counts; only sizes the kernel offers on this node
    hugepages: Mapping[int, HugepageCount] = field(default_factory=dict, hash=False)

    def hugepage(self, page_size_kb: int) -> HugepageCount:
        """Counts for one page size; zero when the node does not offer that size."""
        return self.hugepages.get(page_size_kb, HugepageCount(0, 0))


@dataclass(frozen=True)
class PciNic:
    address: str  # "0000:3b:00.0"
    numa_node: int | None  # None: unknown (sysfs -1 or unreadable) -- never assume node 0
    driver: str | None  # None: no driver bound
    vendor: str  # "8086" (lower-case hex, no 0x)
    device: str  # "1889"
    pci_class: str  # "020000"
    netdev: str | None = None  # interface name when a kernel network driver owns it
    iommu_group: str | None = None
    vfio_device: str | None = None  # "/dev/vfio/<group>" when bound to vfio-pci
    physfn: str | None = None  # PF address when this is an SR-IOV VF
    vfs: tuple[str, ...] = ()  # VF addresses when this is a PF, in virtfn order
    pf_name: str | None = None  # PF netdev for a VF, own netdev for a PF (pfNames selector)
    sriov_totalvfs: int = 0
    # The PCIe root complex above it ("pci0000:3a"), as the kernel names it; DRA's
    # resource.kubernetes.io/pcieRoot. None when sysfs does not show it.
    pcie_root: str | None = None

    @property
    def is_vf(self) -> bool:
        return self.physfn is not None

    @property
    def dpdk_ready(self) -> bool:
        """True when a DPDK application can open it as it is now bound."""
        if self.driver == VFIO_DRIVER:
            return self.iommu_group is not None
        return self.driver in UIO_DRIVERS

    @property
    def state(self) -> str:
        """One word for a person: ``dpdk``, ``kernel``, ``no-iommu-group`` or ``unbound``."""
        if self.dpdk_ready:
            return "dpdk"
        if self.driver == VFIO_DRIVER:
            return "no-iommu-group"
        if self.driver is None:
            return "unbound"
        return "kernel"


@dataclass(frozen=True)
class Topology:
    nodes: tuple[NumaNode, ...]
    nics: tuple[PciNic, ...] = ()
    warnings: tuple[str, ...] = ()

    def node(self, node_id: int) -> NumaNode:
        for node in self.nodes:
            if node.id == node_id:
                return node
        known = ", ".join(str(n.id) for n in self.nodes) or "none"
        raise KeyError(f"NUMA node {node_id} does not exist on this machine (nodes: {known})")

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(node.id for node in self.nodes)

    @property
    def cpus(self) -> frozenset[int]:
        return frozenset().union(*(node.cpus for node in self.nodes))

    def nodes_of(self, cpus: Iterable[int]) -> frozenset[int]:
        """The nodes that hold any of ``cpus``; CPUs this topology does not know (offline or
        absent) belong to no node."""
        wanted = frozenset(cpus)
        return frozenset(node.id for node in self.nodes if node.cpus & wanted)

    def node_of_cpu(self, cpu: int) -> int | None:
        for node in self.nodes:
            if cpu in node.cpus:
                return node.id
        return None

    def nodes_with_hugepages(self, page_size_kb: int) -> tuple[NumaNode, ...]:
        """Nodes with at least one hugepage of this size configured (total > 0)."""
        return tuple(n for n in self.nodes if n.hugepage(page_size_kb).total > 0)

    def nic(self, address: str) -> PciNic:
        for nic in self.nics:
            if nic.address == address:
                return nic
        raise KeyError(f"no network PCI device {address} under this sysfs")

    def nics_on_node(self, node_id: int | None) -> tuple[PciNic, ...]:
        """NICs on one node; ``None`` gives the NICs whose node is unknown."""
        return tuple(nic for nic in self.nics if nic.numa_node == node_id)
