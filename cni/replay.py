"""Plugging recorded attachments again after a vSwitch restart (the agent calls this
from its vSwitch monitor when a vSwitch turns healthy)."""

from __future__ import annotations

import logging

from cni.context import Context
from cni.lookups import describe, port_spec
from cni.teardown import record_netconf
from vswitch.api import Owner, VSwitchError

log = logging.getLogger(__name__)


def replay(ctx: Context, vswitch: str) -> int:
    """Plug again every recorded attachment on ``vswitch`` (after it restarted: VPP
    forgets its interfaces, OVS keeps them and the plug is a no-op). Returns the count."""
    backend = ctx.vswitches.get(vswitch)
    if backend is None:
        return 0
    done = 0
    for stale in ctx.records.all():
        with ctx.locks.hold(stale.device_id):
            record = ctx.records.get(stale.device_id)
            slot = ctx.slots.slot(stale.device_id)
            conf = record_netconf(record) if record and record.state == "added" else None
            if record is None or slot is None or conf is None or slot.vswitch != vswitch:
                continue
            what = describe(record.device_id, record.pod, record.container_id, record.ifname)
            owner = Owner(record.pod_namespace, record.pod_name, record.container_id,
                          record.ifname)
            try:
                backend.plug(port_spec(backend, slot, conf, owner, record.mac))
                done += 1
            except VSwitchError as exc:
                log.error("replay failed %s vswitch=%s error=%s", what, vswitch, exc)
    log.info("replayed ports vswitch=%s count=%d", vswitch, done)
    return done
