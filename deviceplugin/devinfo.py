"""Device-info files (k8snetworkplumbingwg device-info spec 1.1.0) for allocated devices.

Multus copies ``<devinfo-dir>/<resource with / as ->-<deviceID>-device.json`` into the
pod's network-status; paths in it are the ones the container sees. The spec makes the
device plugin delete the files it wrote when it stops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deviceplugin import naming
from deviceplugin.fileio import write_atomic
from deviceplugin.slots import Slot

SPEC_VERSION = "1.1.0"


def device_info(slot: Slot) -> dict[str, Any]:
    """The device-info document of one slot."""
    if slot.kind == "dpdk-nic":
        pci: dict[str, str] = {"pci-address": slot.pci_address or slot.device_id}
        if slot.pf_pci_address:
            pci["pf-pci-address"] = slot.pf_pci_address
        return {"type": "pci", "version": SPEC_VERSION, "pci": pci}
    path = str(slot.container_socket)
    if slot.kind == "vhost-user":
        return {"type": "vhost-user", "version": SPEC_VERSION,
                "vhost-user": {"mode": slot.container_role, "path": path}}
    return {"type": "memif", "version": SPEC_VERSION,
            "memif": {"role": slot.container_role, "path": path,
                      "mode": slot.memif_mode or "ethernet"}}


def write_device_info(slot: Slot, devinfo_dir: Path) -> Path:
    """Write (atomically) and return the device-info file of ``slot``."""
    path = naming.devinfo_path(slot.resource, slot.device_id, devinfo_dir)
    write_atomic(path, json.dumps(device_info(slot), indent=2).encode() + b"\n", mode=0o644)
    return path
