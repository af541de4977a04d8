"""Device-info documents (k8snetworkplumbingwg device-info spec 1.x): the ones Multus
copies into network-status, and the files themselves when a directory of them is mounted.

They carry the kind, the container's role and the socket path (or the PCI address); the
kit uses them for an interface whose numanet.json is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # vhost-user | memif | dpdk-nic
    role: str | None = None  # vhost-user mode / memif role, the container's side
    socket: str | None = None
    memif_mode: str | None = None
    pci_address: str | None = None


def parse(doc: Any) -> DeviceInfo | None:
    """The facts of one device-info document; None for a type numanet does not give."""
    if not isinstance(doc, dict):
        return None
    kind = doc.get("type")
    section = doc.get(kind) if isinstance(kind, str) else None
    if not isinstance(section, dict):
        return None
    if kind == "vhost-user":
        return DeviceInfo("vhost-user", role=_s(section.get("mode")),
                          socket=_s(section.get("path")))
    if kind == "memif":
        return DeviceInfo("memif", role=_s(section.get("role")), socket=_s(section.get("path")),
                          memif_mode=_s(section.get("mode")))
    if kind == "pci" and _s(section.get("pci-address")):
        return DeviceInfo("dpdk-nic", pci_address=section["pci-address"])
    return None


def read_files(root: Path, device_ids: Iterable[str]) -> dict[str, DeviceInfo]:
    """Device ID -> facts, from ``<root>[/dp]/<resource>-<deviceID>-device.json`` (the device
    plugin's files) for the given devices only: the directory may hold other pods' too."""
    wanted = set(device_ids)
    found: dict[str, DeviceInfo] = {}
    for directory in (root, root / "dp"):
        try:
            names = sorted(p.name for p in directory.iterdir())
        except OSError:
            continue
        for name in names:
            device_id = next((d for d in wanted if name.endswith(f"-{d}-device.json")), None)
            if device_id is None or device_id in found:
                continue
            try:
                info = parse(json.loads((directory / name).read_bytes()))
            except (OSError, ValueError):
                continue
            if info is not None:
                found[device_id] = info
    return found


def _s(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
