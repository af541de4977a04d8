"""Records for pools and slots: what the kubelet sees as devices.

A *slot* is one advertised device: a vhost-user or memif socket directory on one NUMA
node, or one DPDK-bound PCI function. The resource manager owns their state; the CNI
service reads them through ``SlotLookup`` to find the vSwitch and socket of a device ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from deviceplugin.naming import SOCKET_NAME

SlotKind = Literal["vhost-user", "memif", "dpdk-nic"]


@dataclass(frozen=True)
class Slot:
    device_id: str
    pool: str
    resource: str  # <prefix>/<pool>
    kind: SlotKind
    numa_node: int | None  # None: unknown (a NIC whose sysfs numa_node is -1)
    index: int = 0
    vswitch: str | None = None  # "ovs" | "vpp" for socket kinds
    # Container side (DESIGN.md "Roles"): vhost-user mode server|client, memif role slave|master.
    container_role: str | None = None
    memif_mode: str | None = None  # ethernet | ip
    host_dir: Path | None = None  # <run-dir>/s/<deviceID>
    container_dir: Path | None = None  # /run/numanet/<pool>/<deviceID>
    pci_address: str | None = None  # dpdk-nic only
    iommu_group: str | None = None  # dpdk-nic only
    pf_pci_address: str | None = None  # dpdk-nic VF only: its PF (device-info pf-pci-address)
    pcie_root: str | None = None  # dpdk-nic only: "pci0000:3a" (DRA pcieRoot attribute)
    # The pool's ringSize / bufferSize (socket kinds; None: the vSwitch's default). memif:
    # passed to the vSwitch and written in numanet.json (memif's slave, usually the
    # container, sizes the rings). vhost-user: numanet.json only, since the virtio side in
    # the container sizes the rings and neither OVS nor VPP takes a size for them.
    ring_size: int | None = None
    buffer_size: int | None = None

    @property
    def host_socket(self) -> Path | None:
        return self.host_dir / SOCKET_NAME if self.host_dir else None

    @property
    def container_socket(self) -> Path | None:
        return self.container_dir / SOCKET_NAME if self.container_dir else None


class SlotLookup(Protocol):
    """What the CNI service needs from the device plugin side."""

    def slot(self, device_id: str) -> Slot | None:
        """The slot with this device ID, or None when numanet advertises no such device."""
        ...

    def pool_resource(self, pool: str) -> str | None:
        """Resource name of a pool (``<prefix>/<pool>``), None for an unknown pool."""
        ...

    def pool_vswitch(self, pool: str) -> str | None:
        """The vSwitch ("ovs" | "vpp") a pool's slots are plugged into; None for a NIC pool
        and for an unknown pool (``pool_resource`` tells the two apart)."""
        ...
