"""Undoing attachments: shared by DEL, GC, the take-over of a device, and an ADD that
failed half way. Each step runs even when an earlier one failed; the record of the
attachment goes last, so whatever could not be undone is still known to a retry."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cni import errors
from cni.container_config import config_path, remove_file
from cni.context import Context
from cni.errors import CniError
from cni.lookups import (
    find_port,
    owner_allows,
    owner_matches,
    switches_holding,
    vswitch_error,
)
from cni.netconf import NetConf, parse_netconf
from cni.records import AttachmentRecord
from cni.request import CniRequest
from deviceplugin.slots import Slot
from vswitch.api import VSwitchError
from vswitch.sockfiles import remove_socket_file

log = logging.getLogger(__name__)


def teardown(ctx: Context, req: CniRequest, record: AttachmentRecord,
             ipam_conf: NetConf | None) -> list[CniError]:
    """Undo every step of one attachment; keep going past failures and return them.

    The record goes last and only when everything else worked, so a DEL retried after
    a failure still knows what is left to do.
    """
    failures: list[CniError] = []
    what = record.what
    slot = ctx.slots.slot(record.device_id)
    # IPAM's release and the unplug are independent and each mostly waits (an exec'd
    # plugin, ovs-vswitchd applying the change): run them side by side.
    release: Callable[[], None] | None = None
    if ipam_conf is not None and ipam_conf.ipam_type:
        try:
            release = ctx.executor.submit(_release_address, ctx, req, record, ipam_conf).result
        except RuntimeError:  # the agent is stopping and its pool is shut: release inline
            release = functools.partial(_release_address, ctx, req, record, ipam_conf)
    for switch in switches_holding(ctx, slot):
        try:
            port = find_port(switch, record.device_id, what)
            # The record (read under the device's lock by every caller) says this
            # attachment holds the device: a port whose owner the backend cannot tell goes
            # too, one tagged with another attachment stays.
            if port is not None and owner_allows(port, record.container_id, record.ifname):
                switch.unplug(record.device_id)
        except CniError as exc:
            failures.append(exc)
        except VSwitchError as exc:
            failures.append(vswitch_error(exc, f"unplug of {what}"))
    if release is not None:
        try:
            release()
        except CniError as exc:
            failures.append(exc)
    try:
        if slot is not None:
            remove_file(config_path(slot))
            _remove_stale_socket(slot)
        if record.device_info_file:
            remove_file(Path(record.device_info_file))
    except OSError as exc:
        failures.append(CniError(errors.IO_FAILURE, f"cannot remove files of {what}: {exc}"))
    if failures:
        log.warning("teardown incomplete %s errors=%s", what, "; ".join(map(str, failures)))
    else:
        ctx.records.delete(record.device_id)
        log.info("attachment removed %s network=%s", what, record.network)
    return failures


def _release_address(ctx: Context, req: CniRequest, record: AttachmentRecord,
                     ipam_conf: NetConf) -> None:
    """IPAM DEL for the attachment as it was added (its container, ifname, netns, args)."""
    ipam_req = replace(req, container_id=record.container_id, ifname=record.ifname,
                       netns=record.netns, path=req.path or record.cni_path,
                       args=replace(req.args, raw=record.cni_args)
                       if req.container_id != record.container_id else req.args)
    ctx.ipam.delete(ipam_req, ipam_conf)


def _remove_stale_socket(slot: Slot) -> None:
    """The socket a container (vhost-user server, memif master) left in the slot directory.

    Its process is gone by DEL, but the file is not: the next pod given this slot would
    fail to bind ("Address already in use"). Only a socket is removed; anything else with
    that name is not ours to delete.
    """
    if slot.host_socket is not None:
        remove_socket_file(slot.host_socket)


def record_netconf(record: AttachmentRecord) -> NetConf | None:
    """The ADD's own config from the record (for IPAM release when no caller config fits)."""
    if not record.netconf:
        return None
    try:
        return parse_netconf(dict(record.netconf), "DEL")
    except CniError as exc:
        log.warning("stored config unusable %s error=%s", record.what, exc)
        return None


def take_over(ctx: Context, req: CniRequest, device_id: str, what: str) -> None:
    """Clear what an earlier attachment recorded on this device, under the device's lock.

    The kubelet has just confirmed that the device is this pod's, and it never gives a
    device to two live pods: whatever still holds it is a dead pod whose DEL has not
    come (or a repeated ADD of this very attachment). Its port, lease and files go, so
    the device is never plugged twice.

    A port with no record (a prepared port, or one an earlier attachment left without
    its record) is the plug's to handle: the ADD's spec says ``take_over``, so the plug's
    own lookup claims a prepared port and replaces a stale one. An ADD thus looks the
    port up once, in the plug (on VPP a lookup is an interface dump).
    """
    old = ctx.records.get(device_id)
    if old is None:
        return
    same = old.same_attachment(req.container_id, req.ifname)
    log.warning("device already attached, taking it over %s previous=%s",
                what, "this-attachment" if same else
                f"{old.pod},{old.container_id[:12]},{old.ifname}")
    failures = teardown(ctx, req, old, record_netconf(old))
    if failures:
        raise CniError(errors.TRY_AGAIN_LATER,
                       f"device {device_id} still holds an earlier attachment that could not "
                       f"be removed: {failures[0]}", "see the agent log; the runtime retries")


def remove_unrecorded(ctx: Context, req: CniRequest, device_id: str, what: str) -> list[CniError]:
    """DEL of an attachment with no record: remove its port only if the port's owner tags
    name this very attachment (another holder's port is never touched)."""
    for switch in switches_holding(ctx, ctx.slots.slot(device_id)):
        try:
            port = find_port(switch, device_id, what)
            if port is not None and owner_matches(port, req.container_id, req.ifname):
                log.info("removing unrecorded port %s port=%s", what, port.port_name)
                switch.unplug(device_id)
        except CniError as exc:
            return [exc]
        except VSwitchError as exc:
            return [vswitch_error(exc, f"unplug of {what}")]
    return []

