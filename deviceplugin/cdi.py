"""CDI (Container Device Interface) spec files for allocated devices, when enabled.

With ``--cdi-dir``, Allocate answers with fully qualified CDI names
(``<prefix>/slot=<deviceID>``) and writes one spec file per device; the container runtime
then applies its mounts and device nodes. Environment variables stay in the Allocate
answer, because one variable lists every device of a pool and CDI edits are per device.

A claim prepared through DRA (dra/) has no Allocate answer: its spec
(``<prefix>/claim=<claimUID>-<device>``, one file per claim) carries the environment too,
each variable on one device of the request it describes (see ``dra/prepare.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


def container_edits(mounts: Sequence[CdiMount], device_nodes: Sequence[CdiDeviceNode],
                    env: Mapping[str, str] | None = None) -> dict[str, object]:
    """The ``containerEdits`` of one CDI device."""
    edits: dict[str, object] = {}
    if env:
        edits["env"] = [f"{name}={value}" for name, value in sorted(env.items())]
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
    return edits


def write_spec(cdi_dir: Path, prefix: str, device_id: str, mounts: Sequence[CdiMount],
               device_nodes: Sequence[CdiDeviceNode]) -> Path:
    spec = {"cdiVersion": CDI_VERSION, "kind": cdi_kind(prefix),
            "devices": [{"name": device_id,
                         "containerEdits": container_edits(mounts, device_nodes)}]}
    path = spec_path(cdi_dir, prefix, device_id)
    write_atomic(path, json.dumps(spec, indent=2).encode() + b"\n", mode=0o644)
    return path


# --- claims prepared through DRA ---

_CLAIM_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class CdiClaimDevice:
    """One device of a claim's spec: its name in the spec and its edits."""

    name: str  # <claimUID>-<DRA device name>
    mounts: tuple[CdiMount, ...] = ()
    device_nodes: tuple[CdiDeviceNode, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


def claim_kind(prefix: str) -> str:
    return f"{prefix}/claim"


def _claim_uid(uid: str) -> str:
    if not isinstance(uid, str) or not _CLAIM_UID.fullmatch(uid):
        raise naming.InvalidName(f"claim UID {uid!r} is not a Kubernetes UID")
    return uid


def claim_device_name(claim_uid: str, dra_device: str) -> str:
    return f"{_claim_uid(claim_uid)}-{dra_device}"


def cdi_claim_device_id(prefix: str, name: str) -> str:
    """Fully qualified name of a claim's device: ``numanet.io/claim=<uid>-<device>``."""
    return f"{claim_kind(prefix)}={name}"


def claim_spec_path(cdi_dir: Path, prefix: str, claim_uid: str) -> Path:
    return Path(cdi_dir) / f"{prefix}-claim-{_claim_uid(claim_uid)}.json"


def write_claim_spec(cdi_dir: Path, prefix: str, claim_uid: str,
                     devices: Sequence[CdiClaimDevice]) -> Path:
    spec = {"cdiVersion": CDI_VERSION, "kind": claim_kind(prefix),
            "devices": [{"name": d.name,
                         "containerEdits": container_edits(d.mounts, d.device_nodes, d.env)}
                        for d in devices]}
    path = claim_spec_path(cdi_dir, prefix, claim_uid)
    write_atomic(path, json.dumps(spec, indent=2).encode() + b"\n", mode=0o644)
    return path
