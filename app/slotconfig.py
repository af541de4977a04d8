"""The slot directories mounted in the container and their ``numanet.json``.

numanet mounts each slot at ``/run/numanet/<pool>/<deviceID>/``; its CNI writes
``numanet.json`` there at ADD (schema: ``app/schemas/numanet.json.schema.json``). Only the
fields the kit uses are checked here (stdlib only, no JSON Schema library); a file of a
newer major schema version is refused rather than half understood.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import AppError

SCHEMA_VERSION = "1.0"  # the newest numanet.json this kit knows; it reads every 1.x
CONFIG_NAME = "numanet.json"
SOCKET_NAME = "sock"
CONTAINER_SLOTS = "/run/numanet"  # where slots are mounted in every container
KINDS = ("vhost-user", "memif", "dpdk-nic")

_SLOT_ID = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?-n([0-9]{1,3})-[0-9]{3,5}$")
_PCI = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_VERSION = re.compile(r"^([0-9]+)\.([0-9]+)$")

# field -> accepted JSON types (None: null allowed)
_FIELDS: dict[str, tuple[Any, ...]] = {
    "deviceID": (str,), "pool": (str,), "kind": (str,), "network": (str,),
    "ifname": (str,), "numaNode": (int, None), "mode": (str,), "role": (str,),
    "memifMode": (str,), "memifId": (int,), "socketPath": (str,), "pciAddress": (str,),
    "queues": (int,), "ringSize": (int,), "bufferSize": (int,), "mac": (str, None),
    "mtu": (int, None), "ips": (list,), "routes": (list,), "address": (str, None),
    "peer": (str, None),
}


def is_slot_id(value: str) -> bool:
    return bool(_SLOT_ID.match(value))


def is_pci_address(value: str) -> bool:
    return bool(_PCI.match(value))


def slot_numa(device_id: str) -> int | None:
    """The NUMA node in a slot ID (``<pool>-n<node>-<index>``)."""
    match = _SLOT_ID.match(device_id)
    return int(match.group(2)) if match else None


def container_socket(pool: str, device_id: str) -> str:
    return f"{CONTAINER_SLOTS}/{pool}/{device_id}/{SOCKET_NAME}"


@dataclass(frozen=True)
class SlotDir:
    pool: str
    device_id: str
    path: Path  # where this process reads it (the container's path unless moved)
    config: dict[str, Any] | None  # numanet.json; None before the network's ADD wrote it


def read_slots(root: Path) -> list[SlotDir]:
    """Every ``<root>/<pool>/<deviceID>/`` with its numanet.json, sorted by device ID."""
    slots: list[SlotDir] = []
    try:
        pools = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return slots
    for pool in pools:
        try:
            dirs = sorted(d for d in pool.iterdir() if d.is_dir() and is_slot_id(d.name))
        except OSError:
            continue
        for slot in dirs:
            slots.append(SlotDir(pool.name, slot.name, slot, read_config(slot / CONFIG_NAME)))
    return sorted(slots, key=lambda s: s.device_id)


def read_config(path: Path) -> dict[str, Any] | None:
    """A checked numanet.json; None when absent. AppError when it is damaged or newer."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AppError(f"cannot read {path}: {exc.strerror}",
                       "the container must be able to read its slot directory (is it "
                       "running in the slot's group, see the pool's slotGroup?)") from None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise AppError(f"{path} is not JSON ({exc})",
                       "numanet's CNI writes it atomically; recreate the pod") from None
    return check_config(doc, str(path))


def check_config(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise AppError(f"{where} is not a JSON object", "recreate the pod")
    _check_version(doc, where)
    for name, types in _FIELDS.items():
        if name not in doc:
            continue
        value = doc[name]
        if value is None and None in types:
            continue
        wanted = tuple(t for t in types if t is not None)
        if isinstance(value, bool) or not isinstance(value, wanted):
            names = " or ".join("null" if t is None else _JSON_NAMES[t] for t in types)
            raise AppError(f"{where}: {name} is {json.dumps(value)[:60]}, not {names}",
                           "numanet writes numanet.json by its schema; was it edited?")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise AppError(f"{where}: kind {kind!r} is none of {', '.join(KINDS)}",
                       "use the numanet-app of the agent's release")
    for key, item_keys in (("ips", ("address",)), ("routes", ("dst",))):
        for item in doc.get(key) or []:
            if not isinstance(item, dict) or not all(isinstance(item.get(k), str)
                                                     for k in item_keys):
                raise AppError(f"{where}: {key} holds {json.dumps(item)[:60]}",
                               "numanet writes numanet.json by its schema; was it edited?")
    return doc


_JSON_NAMES = {str: "a string", int: "an integer", list: "a list"}


def _check_version(doc: dict[str, Any], where: str) -> None:
    """Refuse a major version this kit does not know. Files without schemaVersion come
    from numanet before it was added: version 1, the same fields."""
    ours = int(SCHEMA_VERSION.split(".")[0])
    given = doc.get("schemaVersion")
    if given is None:
        if doc.get("version", 1) != ours:
            given = f"{doc.get('version')}.0"
        else:
            return
    match = _VERSION.match(given) if isinstance(given, str) else None
    if match is None or int(match.group(1)) != ours:
        raise AppError(f"{where} has schema version {given}; this numanet-app reads "
                       f"{ours}.x", "use the numanet-app of the agent's release")
