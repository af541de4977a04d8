"""Check a PortSpec before any of it reaches VPP; every refusal says what to change."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from vswitch.api import PortSpec, VSwitchError
from vswitch.vpp.tags import BD_TAG_PREFIX, MAX_TAG, is_slot_id

MAX_NETWORK = MAX_TAG - len(BD_TAG_PREFIX)
# sockaddr_un.sun_path is 108 bytes with the NUL; vhost_user's sock_filename is string[256].
MAX_SOCKET_PATH = 107
MAX_RING_SIZE = 1 << 16
_NETWORK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")

VHOST_ROLES = ("server", "client")
MEMIF_ROLES = ("slave", "master")
MEMIF_MODES = ("ethernet", "ip")


def validate_spec(spec: PortSpec) -> None:
    """Raise VSwitchError naming the slot and the field when the VPP backend cannot plug it."""
    if not is_slot_id(spec.device_id):
        raise VSwitchError(
            f"cannot plug {spec.device_id!r} into VPP: not a slot device ID "
            "(<pool>-n<numa>-<index>, at most 63 characters); memif and vhost-user ports "
            "belong to slots"
        )
    slot = spec.device_id
    if spec.kind == "memif":
        _check_memif(spec)
    elif spec.kind == "vhost-user":
        if spec.container_role not in VHOST_ROLES:
            raise _refusal(
                slot, f"vhost-user container_role {spec.container_role!r} is not server or client"
            )
    else:
        raise _refusal(slot, f"kind {spec.kind!r} is not vhost-user or memif")
    if is_l3(spec):
        _check_ip_address(spec)
    else:
        if spec.ip_address is not None:
            raise _refusal(
                slot,
                "ip_address is only for memif_mode ip; ethernet memifs and vhost-user ports "
                "join a bridge domain",
            )
        _check_network(spec.network, slot)
    if spec.vlan is not None:
        raise _refusal(
            slot,
            f"vlan {spec.vlan} is not supported on VPP: give the slot its own network, "
            "which gets its own bridge domain",
        )
    if spec.mac is not None:
        if not _MAC.fullmatch(spec.mac):
            raise _refusal(slot, f"mac {spec.mac!r} is not six colon-separated hex bytes")
        if int(spec.mac[:2], 16) & 1:
            raise _refusal(slot, f"mac {spec.mac} is a multicast address; use a unicast one")
    if spec.mtu is not None and not 68 <= spec.mtu <= 9216:
        raise _refusal(slot, f"mtu {spec.mtu} is outside 68..9216")
    _check_socket_path(spec.socket_path, slot)


def is_l3(spec: PortSpec) -> bool:
    return spec.kind == "memif" and spec.memif_mode == "ip"


def _check_memif(spec: PortSpec) -> None:
    slot = spec.device_id
    if spec.container_role not in MEMIF_ROLES:
        raise _refusal(slot, f"memif container_role {spec.container_role!r} is not slave or master")
    if spec.memif_mode not in MEMIF_MODES:
        raise _refusal(slot, f"memif_mode {spec.memif_mode!r} is not ethernet or ip")
    if not 0 <= spec.memif_id <= 0xFFFFFFFF:
        raise _refusal(slot, f"memif_id {spec.memif_id} is outside 0..4294967295")
    if spec.ring_size is not None and not _is_ring_size(spec.ring_size):
        raise _refusal(
            slot, f"ring_size {spec.ring_size} must be a power of 2 up to {MAX_RING_SIZE}"
        )
    if spec.buffer_size is not None and not 1 <= spec.buffer_size <= 0xFFFF:
        raise _refusal(slot, f"buffer_size {spec.buffer_size} is outside 1..65535")


def _check_network(network: str, slot: str) -> None:
    if not (0 < len(network) <= MAX_NETWORK and _NETWORK.fullmatch(network)):
        raise _refusal(
            slot,
            f"network {network!r} must be 1..{MAX_NETWORK} letters, digits, '.', '_' or '-' "
            f"(it becomes the bridge domain tag '{BD_TAG_PREFIX}<network>')",
        )


def _refusal(slot: str, message: str) -> VSwitchError:
    return VSwitchError(f"cannot plug slot {slot} into VPP: {message}")


def _is_ring_size(value: int) -> bool:
    return 0 < value <= MAX_RING_SIZE and value & (value - 1) == 0


def _check_ip_address(spec: PortSpec) -> None:
    slot, address = spec.device_id, spec.ip_address
    if not address:
        raise _refusal(
            slot,
            "memif_mode ip needs ip_address, the VPP side's address in CIDR form such as "
            "10.56.0.1/24",
        )
    if "/" not in address:
        raise _refusal(
            slot, f"ip_address {address!r} has no prefix length; write e.g. 10.56.0.1/24"
        )
    try:
        ipaddress.ip_interface(address)
    except ValueError as exc:
        raise _refusal(slot, f"ip_address {address!r} is not an address/prefix: {exc}") from exc


def _check_socket_path(path: str, slot: str) -> None:
    if not isinstance(path, str) or not os.path.isabs(path) or "\x00" in path:
        raise _refusal(slot, f"socket_path {path!r} must be an absolute path")
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise _refusal(
            slot,
            f"socket_path {path!r} is {len(path.encode())} bytes; unix sockets allow "
            f"{MAX_SOCKET_PATH}: use a shorter run directory",
        )
    if Path(path).name in ("", ".", ".."):
        raise _refusal(slot, f"socket_path {path!r} does not name a file")
    parent = Path(path).parent
    if not parent.is_dir():
        raise _refusal(
            slot,
            f"socket directory {str(parent)!r} does not exist; the device plugin creates it "
            "when the kubelet allocates the slot",
        )
