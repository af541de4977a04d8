"""Network PCI functions from ``bus/pci/devices``: NUMA node, driver, ids, netdev, IOMMU, SR-IOV.

A "NIC" is any function of PCI class 0x02 (network controller), PFs and VFs alike.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from numa._sysfs import SysfsReader
from numa.model import VFIO_DRIVER, PciNic

# domain:bus:device.function, as sysfs names PCI functions (lower-case hex)
PCI_ADDRESS_PATTERN = r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]"

_NETWORK_CLASS = "02"
_VIRTFN = re.compile(r"^virtfn(\d+)$")
_PCI_ADDRESS = re.compile(f"^{PCI_ADDRESS_PATTERN}$")
_HEX = re.compile(r"[0-9a-fA-F]+")
_PCIE_ROOT = re.compile(r"^pci[0-9a-f]{4}:[0-9a-f]{2}$")


def read_nics(fs: SysfsReader, node_ids: Iterable[int]) -> tuple[PciNic, ...]:
    devices = fs.root / "bus" / "pci" / "devices"
    known_nodes = frozenset(node_ids)
    nics: list[PciNic] = []
    for address in fs.listdir(devices):
        if not _PCI_ADDRESS.fullmatch(address):
            fs.warn(devices / address, "not a PCI address (expected dddd:bb:dd.f)")
            continue
        pci_class = _hex_id(fs, devices / address / "class")
        if pci_class is None or not pci_class.startswith(_NETWORK_CLASS):
            continue
        nics.append(_read_nic(fs, devices / address, address, pci_class, known_nodes))
    netdevs = {nic.address: nic.netdev for nic in nics}
    return tuple(_with_pf_name(fs, nic, netdevs, devices) for nic in nics)


def _read_nic(
    fs: SysfsReader, path: Path, address: str, pci_class: str, known_nodes: frozenset[int]
) -> PciNic:
    driver = fs.link_name(path / "driver")
    group = fs.link_name(path / "iommu_group")
    # Listed once: the netdev fallback and the VF links both look through it.
    entries = fs.listdir(path)
    return PciNic(
        address=address,
        numa_node=_numa_node(fs, path / "numa_node", known_nodes),
        driver=driver,
        vendor=_hex_id(fs, path / "vendor") or "",
        device=_hex_id(fs, path / "device") or "",
        pci_class=pci_class,
        netdev=_netdev(fs, path, entries),
        iommu_group=group,
        vfio_device=_vfio_device(fs, group) if driver == VFIO_DRIVER and group else None,
        physfn=fs.link_name(path / "physfn"),
        vfs=_vfs(fs, path, entries),
        sriov_totalvfs=fs.read_int(path / "sriov_totalvfs", required=False) or 0,
        pcie_root=_pcie_root(path),
    )


def _pcie_root(path: Path) -> str | None:
    """``pci<domain>:<bus>`` of the root complex: the first such directory on the way from
    ``devices/`` to the function (``bus/pci/devices/<addr>`` links there)."""
    try:
        target = os.readlink(path)
    except OSError:
        return None
    return next((part for part in Path(target).parts if _PCIE_ROOT.fullmatch(part)), None)


def _hex_id(fs: SysfsReader, path: Path) -> str | None:
    """``0x8086`` -> ``8086``; a value that is not hex is warned about and dropped."""
    text = fs.read(path)
    if text is None:
        return None
    digits = text[2:] if text[:2].lower() == "0x" else text
    if not _HEX.fullmatch(digits):
        fs.warn(path, f"not a hex id: {text[:40]!r}")
        return None
    return digits.lower()


def _numa_node(fs: SysfsReader, path: Path, known_nodes: frozenset[int]) -> int | None:
    # Absent on kernels without NUMA: unknown, and nothing odd about it.
    value = fs.read_int(path, required=False)
    if value is None or value < 0:
        # -1 is the kernel's "no affinity" (firmware gave none): unknown, not node 0.
        return None
    if value not in known_nodes:
        fs.warn(path, f"names NUMA node {value}, which does not exist here")
    return value


def _netdev(fs: SysfsReader, path: Path, entries: list[str] | None = None) -> str | None:
    """The interface under ``path``; ``entries`` is ``path``'s listing when already read."""
    names = fs.listdir(path / "net")
    if not names:
        # virtio and some other buses put the netdev one level down: <dev>/virtio0/net/eth0
        for child in fs.listdir(path) if entries is None else entries:
            if child.startswith("virtio"):
                names = fs.listdir(path / child / "net")
                if names:
                    break
    return names[0] if names else None


def _vfio_device(fs: SysfsReader, group: str) -> str:
    # A group made by vfio's no-IOMMU mode is named "vfio-noiommu" and its node has a prefix.
    name = fs.read(fs.root / "kernel" / "iommu_groups" / group / "name", required=False)
    return f"/dev/vfio/noiommu-{group}" if name == "vfio-noiommu" else f"/dev/vfio/{group}"


def _vfs(fs: SysfsReader, path: Path, entries: list[str]) -> tuple[str, ...]:
    indexed: list[tuple[int, str]] = []
    for name in entries:
        match = _VIRTFN.fullmatch(name)
        if match:
            target = fs.link_name(path / name)
            if target is not None:
                indexed.append((int(match.group(1)), target))
    return tuple(address for _, address in sorted(indexed))


def _with_pf_name(
    fs: SysfsReader, nic: PciNic, netdevs: dict[str, str | None], devices: Path
) -> PciNic:
    if nic.physfn is None:
        return replace(nic, pf_name=nic.netdev)
    if nic.physfn in netdevs:
        pf_name = netdevs[nic.physfn]
    else:
        pf_name = _netdev(fs, devices / nic.physfn)
    return replace(nic, pf_name=pf_name)
