"""Plug and unplug one slot on VPP, all or nothing.

A plug is several API calls (VPP has no transactions); each step that creates something
pushes its undo, and any failure undoes the steps already done, newest first, before the
error goes up. The interface is tagged with the device ID right after it is created, so
even a plug cut short by a crash leaves something the agent's GC can find.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from vswitch.api import (
    TAG_CONTAINER_ID,
    TAG_DEVICE_ID,
    TAG_IFNAME,
    TAG_OWNER,
    TAG_POD_NAME,
    TAG_POD_NAMESPACE,
    Owner,
    PluggedPort,
    PortKind,
    PortSpec,
    VSwitchError,
)
from vswitch.vpp.bridge import (
    delete_if_unused,
    ensure_bridge_domain,
    join_bridge_domain,
    leave_bridge_domain,
)
from vswitch.vpp.connection import VppConnection
from vswitch.vpp.errors import INVALID_SW_IF_INDEX, VppCallError
from vswitch.vpp.inventory import (
    ADMIN_UP,
    MEMIF_ROLE_MASTER,
    Interface,
    Memif,
    Snapshot,
    Vhost,
    read_interface,
)
from vswitch.vpp.memif import (
    Undo,
    create_memif,
    delete_memif,
    delete_socket_id,
    drop_orphan_socket_ids,
    vpp_mode,
    vpp_role,
)
from vswitch.vpp.sockfiles import remove_leftover_socket, restrict_socket
from vswitch.vpp.validate import is_l3
from vswitch.vpp.vhost import create_vhost, delete_vhost, vpp_is_server

log = logging.getLogger(__name__)

TAG_SW_IF_INDEX = "vpp-sw-if-index"
TAG_BD_ID = "vpp-bd-id"
TAG_MEMIF_SOCKET_ID = "vpp-memif-socket-id"


@dataclass(frozen=True)
class IdBases:
    """Where numanet starts counting the IDs it chooses itself."""

    memif_socket_id: int
    bridge_domain_id: int


def vpp_listens(spec: PortSpec) -> bool:
    """VPP creates the socket file: memif master (container slave) or vhost-user server."""
    if spec.kind == "memif":
        return spec.container_role == "slave"
    return vpp_is_server(spec)


def plug_port(
    conn: VppConnection, spec: PortSpec, bases: IdBases, snap: Snapshot | None = None
) -> PluggedPort:
    """Create the slot's port, or adopt the one VPP has; ``snap`` is shared by a replay."""
    slot = spec.device_id
    if snap is None:
        snap = Snapshot(conn, slot)
    existing = snap.find(slot)
    if existing is not None:
        problem = _mismatch(snap, existing, spec) if spec.take_over else ""
        if not problem:
            return _converge(conn, snap, existing, spec, bases)
        # The caller holds the device: an earlier attachment's port goes, made anew below.
        log.warning("unrecorded port on device, removing it device_id=%s port=%s (%s)",
                    slot, existing.name, problem)
        unplug_port(conn, slot, None)
        snap = Snapshot(conn, slot)
    undo: Undo = []
    try:
        if vpp_listens(spec):
            # Undone after the interface is deleted: VPP leaves a memif listener's file.
            undo.append(("socket file", lambda: remove_leftover_socket(spec.socket_path, slot)))
        bd_id = None
        if not is_l3(spec):
            bd_id, created = ensure_bridge_domain(
                conn, snap, spec.network, slot, bases.bridge_domain_id
            )
            if created:
                undo.append((f"bridge domain {bd_id}", lambda: delete_if_unused(conn, bd_id, slot)))
        record: Memif | Vhost
        if spec.kind == "memif":
            record = create_memif(conn, spec, snap, bases.memif_socket_id, undo)
            # memif_create_v2 takes no tag (create_vhost_user_if_v2 does): tag it at once.
            conn.call(
                "sw_interface_tag_add_del",
                slot,
                is_add=True,
                sw_if_index=record.sw_if_index,
                tag=slot,
            )
        else:
            record = create_vhost(conn, spec, undo)
        sw_if_index = record.sw_if_index
        if spec.mtu is not None:
            conn.call("sw_interface_set_mtu", slot, sw_if_index=sw_if_index, mtu=[spec.mtu] * 4)
        if bd_id is not None:
            join_bridge_domain(conn, sw_if_index, bd_id, slot)
        else:
            conn.call(
                "sw_interface_add_del_address",
                slot,
                sw_if_index=sw_if_index,
                is_add=True,
                del_all=False,
                prefix=ipaddress.ip_interface(str(spec.ip_address)),
            )
        # Up last: no packet moves before the port is where it belongs.
        conn.call("sw_interface_set_flags", slot, sw_if_index=sw_if_index, flags=ADMIN_UP)
        iface = read_interface(conn, sw_if_index, slot)
        if iface is None:
            raise VSwitchError(f"VPP lost interface {sw_if_index} of slot {slot} while plugging it")
    except BaseException:
        snap.invalidate()
        _roll_back(undo, slot)
        raise
    if vpp_listens(spec):
        restrict_socket(spec.socket_path, slot)
    snap.add_port(iface, record, bd_id)
    return to_plugged_port(snap, iface, spec.owner, spec.network)


def unplug_port(conn: VppConnection, device_id: str, known: PortSpec | None) -> bool:
    """Remove the slot's interface, its memif socket ID and any socket file VPP leaves."""
    snap = Snapshot(conn, device_id)
    iface = snap.find(device_id)
    if iface is None:
        drop_orphan_socket_ids(conn, snap, device_id, known.socket_path if known else None)
        if known is not None and vpp_listens(known):
            remove_leftover_socket(known.socket_path, device_id)
        return False
    sw_if_index = iface.sw_if_index
    bd = snap.bridge_domain_of(sw_if_index)
    path = snap.socket_path_of(sw_if_index)
    if bd is not None:
        # Out of the bridge domain first, so it can be deleted once empty.
        _gone_ok(lambda: leave_bridge_domain(conn, sw_if_index, bd.bd_id, device_id))
    memif = snap.memifs.get(sw_if_index)
    if memif is not None:
        _gone_ok(lambda: delete_memif(conn, sw_if_index, device_id))
        shared = any(
            m.socket_id == memif.socket_id
            for m in snap.memifs.values()
            if m.sw_if_index != sw_if_index
        )
        if memif.socket_id != 0 and not shared:
            delete_socket_id(conn, memif.socket_id, device_id)
        vpp_listened = memif.role == MEMIF_ROLE_MASTER
    else:
        vhost = snap.vhosts[sw_if_index]
        _gone_ok(lambda: delete_vhost(conn, sw_if_index, device_id))
        vpp_listened = vhost.is_server
    if vpp_listened and path:
        remove_leftover_socket(path, device_id)
    if bd is not None and bd.network is not None:
        delete_if_unused(conn, bd.bd_id, device_id)
    return True


def _gone_ok(step: Callable[[], None]) -> None:
    """An interface another API client deleted meanwhile is as good as deleted."""
    try:
        step()
    except VppCallError as exc:
        if exc.retval != INVALID_SW_IF_INDEX:
            raise


def owned_ports(conn: VppConnection, owners: dict[str, PortSpec]) -> list[PluggedPort]:
    snap = Snapshot(conn)
    ports = []
    for device_id, iface in sorted(snap.owned().items()):
        known = owners.get(device_id)
        ports.append(
            to_plugged_port(
                snap, iface, known.owner if known else Owner(), known.network if known else ""
            )
        )
    return ports


def to_plugged_port(snap: Snapshot, iface: Interface, owner: Owner, network: str) -> PluggedPort:
    sw_if_index = iface.sw_if_index
    port = snap.port_of(sw_if_index)
    kind: PortKind = "memif" if isinstance(port, Memif) else "vhost-user"
    tags = {
        TAG_OWNER: "numanet",
        TAG_DEVICE_ID: iface.tag,
        TAG_SW_IF_INDEX: str(sw_if_index),
    }
    for key, value in (
        (TAG_POD_NAMESPACE, owner.pod_namespace),
        (TAG_POD_NAME, owner.pod_name),
        (TAG_CONTAINER_ID, owner.container_id),
        (TAG_IFNAME, owner.ifname),
    ):
        if value:
            tags[key] = value
    bd = snap.bridge_domain_of(sw_if_index)
    if bd is not None:
        tags[TAG_BD_ID] = str(bd.bd_id)
        network = bd.network if bd.network is not None else network
    if isinstance(port, Memif):
        tags[TAG_MEMIF_SOCKET_ID] = str(port.socket_id)
    return PluggedPort(
        device_id=iface.tag,
        port_name=iface.name,
        kind=kind,
        socket_path=snap.socket_path_of(sw_if_index),
        network=network,
        owner=owner,
        mac=iface.mac or None,
        tags=tags,
    )


def _converge(
    conn: VppConnection, snap: Snapshot, iface: Interface, spec: PortSpec, bases: IdBases
) -> PluggedPort:
    """plug() of a slot VPP already has: same port -> finish it and adopt it; else refuse."""
    slot = spec.device_id
    problem = _mismatch(snap, iface, spec)
    if problem:
        raise VSwitchError(
            f"slot {slot} is already plugged into VPP as {iface.name} but {problem}; "
            "unplug it first"
        )
    sw_if_index = iface.sw_if_index
    if not is_l3(spec):
        current = snap.bridge_domain_of(sw_if_index)
        if current is None or current.network != spec.network:
            bd_id, created = ensure_bridge_domain(
                conn, snap, spec.network, slot, bases.bridge_domain_id
            )
            try:
                join_bridge_domain(conn, sw_if_index, bd_id, slot)
            except BaseException:
                if created:
                    _roll_back(
                        [(f"bridge domain {bd_id}", lambda: delete_if_unused(conn, bd_id, slot))],
                        slot,
                    )
                raise
            finally:
                snap.invalidate()
    if not iface.admin_up:
        conn.call("sw_interface_set_flags", slot, sw_if_index=sw_if_index, flags=ADMIN_UP)
    log.info("adopted the port VPP already has device_id=%s port=%s", slot, iface.name)
    return to_plugged_port(snap, iface, spec.owner, spec.network)


def _mismatch(snap: Snapshot, iface: Interface, spec: PortSpec) -> str:
    sw_if_index = iface.sw_if_index
    memif = snap.memifs.get(sw_if_index)
    kind = "memif" if memif is not None else "vhost-user"
    if kind != spec.kind:
        return f"it is a {kind} interface, not {spec.kind}"
    path = snap.socket_path_of(sw_if_index)
    if path != spec.socket_path:
        return f"its socket is {path}, not {spec.socket_path}"
    if memif is not None:
        if memif.role != vpp_role(spec) or memif.mode != vpp_mode(spec):
            return "its memif role or mode differ"
        if memif.memif_id != spec.memif_id:
            return f"its memif id is {memif.memif_id}, not {spec.memif_id}"
    elif snap.vhosts[sw_if_index].is_server != vpp_is_server(spec):
        return "its vhost-user server/client side differs"
    current = snap.bridge_domain_of(sw_if_index)
    if current is not None and current.network is not None and not is_l3(spec):
        if current.network != spec.network:
            return f"it is in network {current.network}, not {spec.network}"
    return ""


def _roll_back(undo: Undo, slot: str) -> None:
    for what, step in reversed(undo):
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - keep undoing; the original error goes up
            log.warning("failed plug not undone device_id=%s step=%r: %s", slot, what, exc)
        else:
            log.info("failed plug undone device_id=%s step=%r", slot, what)
