"""Putting the attachments the CNI recorded back on a vSwitch (the agent decides when).

- ``adopt(ctx, vswitch)``: once per backend object, when it is first healthy (after an
  agent restart the backend remembers nothing). Each recorded attachment still held by a
  pod is plugged again, which takes over the port the vSwitch kept or makes the one it
  lost; one held by no pod (the kubelet lists it for none *and* its netns is gone) is torn
  down with its lease, files, record and allocation. When the kubelet cannot be asked,
  nothing is torn down: the runtime's DEL or GC comes later. The pass holds the locks of
  every recorded device, and first removes ports prepared for devices no longer allocated.
- ``replay(ctx, vswitch)``: after an outage of a vSwitch that does not put its ports back
  itself (OVS keeps them, so the plug is normally a no-op). After a VPP restart the VPP
  backend replays its own slots, so nothing here runs and each port is put back once.

Both plug with what the ADD recorded (MAC, an ip-mode memif's vSwitch-side address) and
rewrite a memif's numanet.json when the vSwitch reports another queue count.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from cni.container_config import config_path, refresh_container_config, remove_file
from cni.context import Context
from cni.errors import CniError
from cni.lookups import held_devices, memif_queues, port_spec
from cni.prepare import remove_unallocated
from cni.records import AttachmentRecord
from cni.request import CniArgs, CniRequest
from cni.teardown import record_netconf, teardown
from deviceplugin.slots import Slot
from vswitch.api import TAG_MEMIF_QUEUES, VSwitch, VSwitchError, VSwitchUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adoption:
    """What ``adopt`` did, by device ID."""

    plugged: tuple[str, ...] = ()  # held attachments, on the vSwitch again
    removed: tuple[str, ...] = ()  # attachments no pod holds, torn down
    failed: dict[str, str] = field(default_factory=dict)  # device ID -> why


def adopt(ctx: Context, vswitch: str) -> Adoption:
    """Plug every recorded attachment on ``vswitch`` that a pod still holds; tear down
    the others. Raises VSwitchUnavailable when the vSwitch went away meanwhile (the caller
    runs it again when it is back; every step is idempotent)."""
    backend = ctx.vswitches.get(vswitch)
    if backend is None:
        return Adoption()
    if ctx.allocations is not None:
        try:
            remove_unallocated(ctx, vswitch, set(ctx.allocations.all()))
        except VSwitchUnavailable:
            raise
        except VSwitchError as exc:
            log.error("prepared ports not checked vswitch=%s error=%s", vswitch, exc)
    ids = sorted({r.device_id for r in ctx.records.all() if _slot_on(ctx, r, vswitch)})
    # Asked once, and only when something needs the answer: at a node's boot the kubelet
    # may not serve pod-resources yet, and a question would wait for its timeout.
    held = functools.cache(
        lambda: held_devices(ctx, "keeping every recorded attachment and port"))
    plugged: list[str] = []
    removed: list[str] = []
    failed: dict[str, str] = {}
    with ExitStack() as locks:
        for device_id in ids:
            locks.enter_context(ctx.locks.hold(device_id))
        for device_id in ids:
            record = ctx.records.get(device_id)  # again, under the lock
            slot = ctx.slots.slot(device_id)
            if record is None or slot is None or slot.vswitch != vswitch:
                continue
            what = record.what
            try:
                if _unheld(record, slot, held()):
                    _remove(ctx, backend, record)
                    removed.append(device_id)
                    log.info("removed attachment no pod holds %s vswitch=%s", what, vswitch)
                elif record.state == "added":
                    _plug(backend, slot, record)
                    plugged.append(device_id)
            except VSwitchUnavailable:
                raise
            except (VSwitchError, CniError) as exc:
                failed[device_id] = str(exc)
                log.error("adoption failed %s vswitch=%s error=%s", what, vswitch, exc)
    removed += _remove_orphans(ctx, backend, vswitch, held)
    log.info("adopted attachments vswitch=%s plugged=%d removed=%d failed=%d", vswitch,
             len(plugged), len(removed), len(failed))
    return Adoption(tuple(plugged), tuple(removed), failed)


def _remove_orphans(ctx: Context, backend: VSwitch, vswitch: str,
                    held: Callable[[], set[tuple[str, str]] | None]) -> list[str]:
    """Remove the ports numanet tagged that no record explains and no pod holds: after a
    reboot, OVS's database still holds the ports while the records went with /run (tmpfs),
    and nothing else would ever remove them. Prepared ports are the allocations'
    (``remove_unallocated``); while the kubelet cannot be asked nothing goes."""
    unrecorded = [p for p in backend.ports()
                  if not p.prepared and ctx.records.get(p.device_id) is None]
    if not unrecorded:
        return []
    known = held()
    if known is None:
        return []
    held_ids = {device_id for _, device_id in known}
    removed: list[str] = []
    for port in unrecorded:
        if port.device_id in held_ids:
            continue
        with ctx.locks.hold(port.device_id):
            if ctx.records.get(port.device_id) is not None:
                continue  # an ADD recorded it meanwhile
            backend.unplug(port.device_id)
            slot = ctx.slots.slot(port.device_id)
            if slot is not None:
                remove_file(config_path(slot))
            removed.append(port.device_id)
            log.info("removed port no record or pod holds device_id=%s port=%s owner=%s "
                     "vswitch=%s", port.device_id, port.port_name, port.owner.pod, vswitch)
    return removed


def replay(ctx: Context, vswitch: str) -> int:
    """Plug again every recorded attachment on ``vswitch``; returns the count."""
    backend = ctx.vswitches.get(vswitch)
    if backend is None:
        return 0
    done = 0
    for stale in ctx.records.all():
        with ctx.locks.hold(stale.device_id):
            record = ctx.records.get(stale.device_id)
            slot = ctx.slots.slot(stale.device_id)
            if record is None or record.state != "added" or slot is None \
                    or slot.vswitch != vswitch:
                continue
            try:
                _plug(backend, slot, record)
                done += 1
            except (VSwitchError, CniError) as exc:
                log.error("replay failed %s vswitch=%s error=%s", record.what, vswitch, exc)
    log.info("replayed ports vswitch=%s count=%d", vswitch, done)
    return done


def _slot_on(ctx: Context, record: AttachmentRecord, vswitch: str) -> bool:
    slot = ctx.slots.slot(record.device_id)
    return slot is not None and slot.vswitch == vswitch


def _unheld(record: AttachmentRecord, slot: Slot, held: set[tuple[str, str]] | None) -> bool:
    # Both signs are required: a kubelet that has just restarted may not list a running
    # pod yet, but a running pod's network namespace exists.
    if held is None or (slot.resource, record.device_id) in held:
        return False
    return not (record.netns and os.path.exists(record.netns))


def _plug(backend: VSwitch, slot: Slot, record: AttachmentRecord) -> None:
    """Plug the recorded attachment again as its ADD did (same MAC, same vSwitch-side
    address of an ip-mode memif), then bring numanet.json up to date with what the
    vSwitch decided this time (a memif's queue count follows OVS's PMD threads)."""
    conf = record_netconf(record)
    if conf is None:
        raise VSwitchError(f"the record of {record.device_id} holds no usable network config")
    plugged = backend.plug(port_spec(backend, slot, conf, record.owner, record.mac,
                                     record.vswitch_address))
    if slot.kind == "memif" and refresh_container_config(slot, memif_queues(plugged)):
        log.info("container config rewritten %s queues=%s", record.what,
                 plugged.tags.get(TAG_MEMIF_QUEUES, "-"))


def _remove(ctx: Context, backend: VSwitch, record: AttachmentRecord) -> None:
    # The record, read under the device's lock, says this attachment holds the device: its
    # port goes even when the backend cannot tell the owner (VPP tags carry only the ID).
    backend.unplug(record.device_id)
    req = CniRequest("DEL", container_id=record.container_id, netns=record.netns,
                     ifname=record.ifname, path=record.cni_path,
                     args=CniArgs(raw=record.cni_args, pod_namespace=record.pod_namespace,
                                  pod_name=record.pod_name))
    failures = teardown(ctx, req, record, record_netconf(record))
    if failures:
        raise failures[0]
    if ctx.allocations is not None:
        ctx.allocations.release(record.device_id)
