"""memif interfaces: one socket ID and one socket file per slot.

The socket ID is numanet's: the lowest ID from a base that VPP's socket table does not
hold. Because VPP's table is read under the backend lock before each allocation, an ID
is never handed out while an interface (or a half-finished plug) still holds it, and it
returns to the pool when unplug deletes it from VPP.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from vswitch.api import PortSpec, VSwitchError
from vswitch.vpp.connection import VppConnection
from vswitch.vpp.inventory import (
    MEMIF_MODE_ETHERNET,
    MEMIF_MODE_IP,
    MEMIF_ROLE_MASTER,
    MEMIF_ROLE_SLAVE,
    Memif,
    Snapshot,
)

DEFAULT_SOCKET_ID_BASE = 1000
MAX_SOCKET_ID = 0xFFFFFFFE  # ~0 asks VPP to pick one; numanet always names its own

Undo = list[tuple[str, Callable[[], object]]]


def vpp_role(spec: PortSpec) -> int:
    """VPP's side is the opposite of the container's (DESIGN.md, Roles)."""
    return MEMIF_ROLE_MASTER if spec.container_role == "slave" else MEMIF_ROLE_SLAVE


def vpp_mode(spec: PortSpec) -> int:
    return MEMIF_MODE_IP if spec.memif_mode == "ip" else MEMIF_MODE_ETHERNET


def allocate_socket_id(taken: set[int], base: int) -> int:
    """The lowest socket ID from ``base`` that is not taken."""
    for candidate in range(base, MAX_SOCKET_ID + 1):
        if candidate not in taken:
            return candidate
    raise VSwitchError(f"no free memif socket ID from {base}")


def create_memif(
    conn: VppConnection, spec: PortSpec, snap: Snapshot, socket_id_base: int, undo: Undo
) -> Memif:
    """Register the slot's socket file and create the memif on it."""
    slot = spec.device_id
    drop_orphan_socket_ids(conn, snap, slot, spec.socket_path)
    socket_id = allocate_socket_id(set(snap.memif_sockets), socket_id_base)
    conn.call(
        "memif_socket_filename_add_del_v2",
        slot,
        is_add=True,
        socket_id=socket_id,
        socket_filename=spec.socket_path,
    )
    snap.add_socket(socket_id, spec.socket_path)
    undo.append(
        (
            f"memif socket id {socket_id}",
            lambda: delete_socket_id(conn, socket_id, slot),
        )
    )
    args: dict[str, Any] = {
        "role": vpp_role(spec),
        "mode": vpp_mode(spec),
        "id": spec.memif_id,
        "socket_id": socket_id,
        "ring_size": spec.ring_size or 0,  # 0: VPP's default (1024)
        "buffer_size": spec.buffer_size or 0,  # 0: VPP's default (2048)
    }
    if spec.mac:
        args["hw_addr"] = spec.mac
    reply = conn.call("memif_create_v2", slot, **args)
    sw_if_index = int(reply.sw_if_index)
    undo.append((f"memif sw_if_index {sw_if_index}", lambda: delete_memif(conn, sw_if_index, slot)))
    return Memif(
        sw_if_index,
        socket_id,
        spec.memif_id,
        args["role"],
        args["mode"],
        args["ring_size"],
        args["buffer_size"],
    )


def delete_memif(conn: VppConnection, sw_if_index: int, slot: str) -> None:
    conn.call("memif_delete", slot, sw_if_index=sw_if_index)


def delete_socket_id(conn: VppConnection, socket_id: int, slot: str) -> None:
    conn.call(
        "memif_socket_filename_add_del_v2",
        slot,
        is_add=False,
        socket_id=socket_id,
        socket_filename="",
    )


def drop_orphan_socket_ids(
    conn: VppConnection, snap: Snapshot, device_id: str, path: str | None = None
) -> None:
    """Delete this slot's socket IDs that no memif uses: left by a plug that died half way.

    Without the slot's spec (an agent that restarted), the slot's file is recognised by
    its directory, which DESIGN.md names after the device ID: ``.../<deviceID>/sock``.
    """
    candidates = [
        socket_id
        for socket_id, filename in snap.memif_sockets.items()
        if socket_id != 0
        and (filename == path if path else PurePosixPath(filename).parent.name == device_id)
    ]
    if not candidates:
        return
    in_use = {m.socket_id for m in snap.memifs.values()}
    for socket_id in candidates:
        if socket_id not in in_use:
            delete_socket_id(conn, socket_id, device_id)
            snap.drop_socket(socket_id)
