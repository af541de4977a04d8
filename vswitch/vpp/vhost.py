"""vhost-user interfaces on the slot's socket, tagged with the device ID at creation."""

from __future__ import annotations

from typing import Any

from vswitch.api import PortSpec
from vswitch.vpp.connection import VppConnection
from vswitch.vpp.errors import IF_ALREADY_EXISTS, VppCallError
from vswitch.vpp.inventory import Vhost
from vswitch.vpp.memif import Undo


def vpp_is_server(spec: PortSpec) -> bool:
    """VPP listens when the container connects (container mode client), and the reverse."""
    return spec.container_role == "client"


def create_vhost(conn: VppConnection, spec: PortSpec, undo: Undo) -> Vhost:
    slot = spec.device_id
    args: dict[str, Any] = {
        "is_server": vpp_is_server(spec),
        "sock_filename": spec.socket_path,
        "tag": spec.device_id,
    }
    if spec.mac:
        args["use_custom_mac"] = True
        args["mac_address"] = spec.mac
    try:
        reply = conn.call("create_vhost_user_if_v2", slot, **args)
    except VppCallError as exc:
        if exc.retval == IF_ALREADY_EXISTS:
            raise VppCallError(
                exc.call,
                slot,
                exc.retval,
                f"another VPP vhost-user interface already uses {spec.socket_path}",
            ) from exc
        raise
    sw_if_index = int(reply.sw_if_index)
    undo.append(
        (f"vhost-user sw_if_index {sw_if_index}", lambda: delete_vhost(conn, sw_if_index, slot))
    )
    return Vhost(sw_if_index, spec.socket_path, args["is_server"])


def delete_vhost(conn: VppConnection, sw_if_index: int, slot: str) -> None:
    conn.call("delete_vhost_user_if", slot, sw_if_index=sw_if_index)
