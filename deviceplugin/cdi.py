"""CDI (Container Device Interface) spec files for allocated devices, when enabled.

With ``--cdi-dir``, Allocate answers with fully qualified CDI names
(``<prefix>/slot=<deviceID>``) and writes one spec file per device; the container runtime
then applies its mounts and device nodes. Environment variables stay in the Allocate
answer, because one variable lists every device of a pool and CDI edits are per device.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deviceplugin import naming
from deviceplugin.fileio import write_atomic

CDI_VERSION = "0.6.0"


@dataclass(frozen=True)
class CdiMount:
    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True)
class CdiDeviceNode:
    path: str  # in the container
    host_path: str
    permissions: str = "rw"


def cdi_kind(prefix: str) -> str:
    return f"{prefix}/slot"


def cdi_device_name(prefix: str, device_id: str) -> str:
    """Fully qualified name the kubelet passes to the runtime: ``numanet.io/slot=<id>``."""
    return f"{cdi_kind(prefix)}={naming.validate_device_id(device_id)}"


def spec_path(cdi_dir: Path, prefix: str, device_id: str) -> Path:
    return Path(cdi_dir) / f"{prefix}-slot-{naming.validate_device_id(device_id)}.json"


def write_spec(cdi_dir: Path, prefix: str, device_id: str, mounts: Sequence[CdiMount],
               device_nodes: Sequence[CdiDeviceNode]) -> Path:
    edits: dict[str, object] = {}
    if mounts:
        edits["mounts"] = [
            {"hostPath": m.host_path, "containerPath": m.container_path,
             "options": ["rbind", "ro" if m.read_only else "rw"]}
            for m in mounts
        ]
    if device_nodes:
        edits["deviceNodes"] = [
            {"path": d.path, "hostPath": d.host_path, "permissions": d.permissions}
            for d in device_nodes
        ]
    spec = {"cdiVersion": CDI_VERSION, "kind": cdi_kind(prefix),
            "devices": [{"name": device_id, "containerEdits": edits}]}
    path = spec_path(cdi_dir, prefix, device_id)
    write_atomic(path, json.dumps(spec, indent=2).encode() + b"\n", mode=0o644)
    return path
