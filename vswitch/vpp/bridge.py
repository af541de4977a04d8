"""Bridge domains: one per numanet network, created on demand with an explicit ID, tagged.

The network name is the bridge domain's identity (tag ``numanet:<network>``), not its ID:
after a VPP restart the replay creates it again, possibly under another ID. IDs are the
lowest free ones from a base, so numanet stays clear of the small IDs operators use.
"""

from __future__ import annotations

import logging

from vswitch.api import VSwitchError
from vswitch.vpp.connection import VppConnection
from vswitch.vpp.errors import BD_IN_USE, NO_SUCH_ENTRY, VppCallError
from vswitch.vpp.inventory import BridgeDomain, Snapshot
from vswitch.vpp.tags import BD_TAG_PREFIX

log = logging.getLogger(__name__)

DEFAULT_BD_ID_BASE = 1000
MAX_BD_ID = (1 << 24) - 1  # VPP: L2_BD_ID_MAX
L2_PORT_TYPE_NORMAL = 0


def ensure_bridge_domain(
    conn: VppConnection, snap: Snapshot, network: str, slot: str, base: int = DEFAULT_BD_ID_BASE
) -> tuple[int, bool]:
    """(bd_id, created) of the network's bridge domain; creates it when missing."""
    existing = snap.bridge_domain_for(network)
    if existing is not None:
        return existing.bd_id, False
    used = set(snap.bridge_domains)
    bd_id = next((i for i in range(base, MAX_BD_ID + 1) if i not in used), None)
    if bd_id is None:
        raise VSwitchError(f"no free VPP bridge domain ID from {base} for slot {slot}")
    reply = conn.call(
        "bridge_domain_add_del_v2",
        slot,
        bd_id=bd_id,
        flood=True,
        uu_flood=True,
        forward=True,
        learn=True,
        arp_term=False,
        arp_ufwd=False,
        mac_age=0,
        bd_tag=BD_TAG_PREFIX + network,
        is_add=True,
    )
    created_id = int(reply.bd_id)
    snap.add_bridge_domain(BridgeDomain(created_id, BD_TAG_PREFIX + network, frozenset()))
    log.info(
        "created VPP bridge domain bd_id=%d network=%s device_id=%s", created_id, network, slot
    )
    return created_id, True


def join_bridge_domain(conn: VppConnection, sw_if_index: int, bd_id: int, slot: str) -> None:
    _set_l2_bridge(conn, sw_if_index, bd_id, slot, enable=True)


def leave_bridge_domain(conn: VppConnection, sw_if_index: int, bd_id: int, slot: str) -> None:
    _set_l2_bridge(conn, sw_if_index, bd_id, slot, enable=False)


def _set_l2_bridge(
    conn: VppConnection, sw_if_index: int, bd_id: int, slot: str, *, enable: bool
) -> None:
    conn.call(
        "sw_interface_set_l2_bridge",
        slot,
        rx_sw_if_index=sw_if_index,
        bd_id=bd_id,
        port_type=L2_PORT_TYPE_NORMAL,
        shg=0,
        enable=enable,
    )


def delete_if_unused(conn: VppConnection, bd_id: int, slot: str) -> bool:
    """Delete a numanet bridge domain that has no members left; True when deleted.

    Members are checked by VPP itself (BD_IN_USE), so a slot plugged concurrently by
    another client of the same VPP keeps its bridge domain.
    """
    details = conn.dump("bridge_domain_dump", slot, bd_id=bd_id)
    if not details:
        return False
    bd = details[0]
    if not str(bd.bd_tag).startswith(BD_TAG_PREFIX) or int(bd.n_sw_ifs) > 0:
        return False
    try:
        conn.call("bridge_domain_add_del_v2", slot, bd_id=bd_id, is_add=False)
    except VppCallError as exc:
        if exc.retval in (BD_IN_USE, NO_SUCH_ENTRY):
            return False
        raise
    log.info("deleted empty VPP bridge domain bd_id=%d tag=%s device_id=%s", bd_id, bd.bd_tag, slot)
    return True
