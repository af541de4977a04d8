"""What the container reads: ``numanet.json`` in its slot directory, and the device-info
file Multus asks for in ``runtimeConfig.CNIDeviceInfoFile`` (device-info spec 1.1.0).

Paths written here are the ones the container sees (``/run/numanet/<pool>/<deviceID>``),
not the host's. Beside the slot's facts numanet.json carries the pool's ``ringSize`` /
``bufferSize`` when configured (memif's slave and vhost-user's virtio side size the rings:
usually the container), a memif's ``queues`` when the vSwitch fixes the count, and for a
memif in mode ip the container's ``address`` and its ``peer`` (the vSwitch side, which is
also the gateway in ``ips``). ``schemaVersion`` names the JSON Schema the file follows
(``deploy/schemas/numanet.json.schema.json``). The device-info path comes from the network
configuration, so it is confined to Multus's CNI device-info directory (``<devinfo
root>/cni``, never the device plugins' ``dp``) before anything is written there as root.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni import errors
from cni.errors import CniError
from cni.netconf import path_problem
from cni.result import IpamResult
from deviceplugin import naming
from deviceplugin.devinfo import device_info
from deviceplugin.fileio import write_atomic
from deviceplugin.slots import Slot

FORMAT_VERSION = 1
# MAJOR.MINOR of the JSON Schema numanet.json follows (deploy/schemas/numanet.json.schema.json,
# shipped in the pod-side kit as app/schemas/): a minor version only adds optional fields.
SCHEMA_VERSION = "1.0"
# Device-info root (/var/run/k8s.cni.cncf.io/devinfo): Multus names CNI files under cni/,
# device plugins write theirs under dp/.
DEVINFO_ROOT = naming.DEVINFO_DIR.parent
CNI_DEVINFO_SUBDIR = "cni"


@dataclass(frozen=True)
class ContainerView:
    """The per-attachment facts the container config carries beside the slot's own."""

    network: str
    ifname: str
    mac: str | None
    ipam: IpamResult
    mtu: int | None = None
    # memif: queue pairs the container must open, when its vSwitch sends on a fixed set
    # of queues (OVS: one per PMD thread plus one); None when the container may choose.
    queues: int | None = None
    # memif mode ip: the container's own address (CIDR) and the vSwitch side's address
    # on the same link (no prefix), which is the container's gateway.
    address: str | None = None
    peer: str | None = None


def container_config(slot: Slot, view: ContainerView) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "schemaVersion": SCHEMA_VERSION,
        "deviceID": slot.device_id,
        "pool": slot.pool,
        "resource": slot.resource,
        "kind": slot.kind,
        "network": view.network,
        "ifname": view.ifname,
        "numaNode": slot.numa_node,
    }
    if slot.kind == "vhost-user":
        doc["mode"] = slot.container_role
        doc["socketPath"] = str(slot.container_socket)
    elif slot.kind == "memif":
        doc["role"] = slot.container_role
        doc["memifMode"] = slot.memif_mode or "ethernet"
        doc["memifId"] = 0
        doc["socketPath"] = str(slot.container_socket)
        if view.queues is not None:
            doc["queues"] = view.queues
        if slot.memif_mode == "ip":
            doc["address"] = view.address
            doc["peer"] = view.peer
    else:
        doc["pciAddress"] = slot.pci_address or slot.device_id
    if slot.ring_size is not None:
        doc["ringSize"] = slot.ring_size
    if slot.buffer_size is not None:
        doc["bufferSize"] = slot.buffer_size
    doc["mac"] = view.mac
    doc["mtu"] = view.mtu
    doc["ips"] = [ip.to_json() for ip in view.ipam.ips]
    doc["routes"] = [r.to_json() for r in view.ipam.routes]
    doc["dns"] = view.ipam.dns.to_json()
    return doc


def config_path(slot: Slot) -> Path | None:
    return slot.host_dir / naming.CONTAINER_CONFIG_NAME if slot.host_dir else None


def write_container_config(slot: Slot, view: ContainerView) -> Path | None:
    """Write numanet.json atomically (0644: the container may run as any user)."""
    path = config_path(slot)
    if path is None:
        return None
    _write_json(path, container_config(slot, view), "container config",
                "check that the slot directory exists and the agent can write it")
    return path


def refresh_container_config(slot: Slot, queues: int | None) -> bool:
    """Bring what the vSwitch decides at plug time (the memif queue count) up to date in
    an existing numanet.json, after a port was plugged again; the rest of the file (IPs
    from IPAM, MAC, ...) does not change on a replay. Writes only when the file says
    something else, so a replay that changed nothing touches no file. False when nothing
    was written (no file: the attachment's ADD did not get that far)."""
    path = config_path(slot)
    if path is None or slot.kind != "memif":
        return False
    try:
        current = json.loads(path.read_bytes())
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise CniError(errors.IO_FAILURE, f"cannot read {path}: {exc}",
                       "the container config is damaged; recreate the pod's network") from None
    if not isinstance(current, dict):
        raise CniError(errors.IO_FAILURE, f"{path} is not a JSON object",
                       "the container config is damaged; recreate the pod's network")
    wanted = {k: v for k, v in current.items() if k != "queues"}
    if queues is not None:
        wanted["queues"] = queues
    if wanted == current:
        return False
    _write_json(path, wanted, "container config",
                "check that the slot directory exists and the agent can write it")
    return True


def _write_json(path: Path, doc: dict[str, Any], what: str, hint: str) -> None:
    """Write atomically, 0644: the container may run as any user."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(doc, indent=2).encode() + b"\n", mode=0o644)
    except OSError as exc:
        raise CniError(errors.IO_FAILURE, f"cannot write {what} {path}: {exc.strerror}",
                       hint) from None


# Errors by which a path shows that no file of numanet's can be there: it is gone, its
# directory never was one, it is too long to name a file, it loops through symlinks, or it
# is a directory (numanet writes files only; a directory there is someone else's).
_CANNOT_EXIST = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP,
                           errno.EISDIR})


def remove_file(path: Path | None) -> None:
    """Remove a file; a path that cannot name one (see ``_CANNOT_EXIST``, or with a NUL or
    bytes the file system cannot take) counts as removed, so that a path an earlier ADD
    recorded never keeps an undo failing."""
    if path is None:
        return
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno not in _CANNOT_EXIST:
            raise
    except ValueError:  # NUL byte, or not encodable (UnicodeEncodeError)
        pass


def devinfo_file(requested: str, root: Path = DEVINFO_ROOT) -> Path:
    """The CNIDeviceInfoFile path, refused unless it names a file in ``<root>/cni``.

    Any plain file name is taken: Multus names the file ``<namespace>-<network>-<container
    ID>_<ifname>`` with no extension (network-attachment-definition-client's
    GetCNIDeviceInfoPath). Refused: a path outside the directory, ``..``, a NUL, and a
    name starting with ``.`` (numanet's own temporary files while it writes one)."""
    path = Path(requested)
    allowed = Path(root) / CNI_DEVINFO_SUBDIR
    # Encoding, NUL, lengths and '..' first: realpath() raises on a NUL or a lone
    # surrogate, and a name the file system cannot take (ENAMETOOLONG) must fail here,
    # before anything is recorded, not when the file is written.
    problem = path_problem(requested)
    if problem:
        raise CniError(errors.INVALID_NETWORK_CONFIG,
                       f"runtimeConfig.CNIDeviceInfoFile {requested[:120]!r} {problem}",
                       f"Multus names a file in {allowed}; numanet writes nowhere else")
    real_root = Path(os.path.realpath(allowed))
    real_parent = Path(os.path.realpath(path.parent))  # absolute: path_problem says so
    inside = real_parent == real_root or real_root in real_parent.parents
    if not inside or not path.name or path.name.startswith("."):
        raise CniError(errors.INVALID_NETWORK_CONFIG,
                       f"runtimeConfig.CNIDeviceInfoFile {requested[:120]!r} is not a file "
                       f"under {allowed}",
                       "Multus names a file in its device-info directory; numanet writes nowhere "
                       "else")
    return path


def write_devinfo(path: Path, slot: Slot) -> Path:
    _write_json(path, device_info(slot), "device-info file", "check the device-info directory")
    return path
