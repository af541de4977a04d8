"""The CNI verbs as plain functions: ``add``, ``delete``, ``check``, ``status``, ``gc``,
``version``. Each takes the validated ``CniRequest`` and a ``Context`` holding the
agent's parts (slot lookup, vSwitches, kubelet client, IPAM runner) and returns what goes
to stdout, or raises ``CniError``.

ADD: config and device ID checked, slot found, the kubelet asked whether the device is
this pod's, then under the device's lock: a record of the attachment is written first,
IPAM ADD runs beside the vSwitch plug, the container files are written, and any failure
undoes every step done so far. DEL undoes the same steps and succeeds when they are
already undone. GC tears down the attachments of this network that the runtime no
longer lists.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

from cni import errors, metrics
from cni.container_config import (
    ContainerView,
    config_path,
    devinfo_file,
    remove_file,
    write_container_config,
    write_devinfo,
)
from cni.context import Allocations, Context, PodResources
from cni.errors import CniError
from cni.lookups import (
    check_netns,
    check_vswitch_up,
    device_id_of,
    device_of_pod,
    find_port,
    find_slot,
    is_ip_mode,
    memif_queues,
    owner_allows,
    owner_matches,
    pod_identity,
    port_spec,
    vswitch_address,
    vswitch_error,
    vswitch_for,
)
from cni.mac import normalize_mac, stable_mac
from cni.netconf import SUPPORTED_VERSIONS, NetConf, parse_netconf, read_document, version_of
from cni.prepare import remember_shape
from cni.reconcile import release_unheld
from cni.records import AttachmentRecord, describe
from cni.replay import replay
from cni.request import CniRequest
from cni.result import Interface, IpamResult, parse_dns, parse_result, render_result
from cni.teardown import record_netconf, remove_unrecorded, take_over, teardown
from deviceplugin.slots import Slot
from vswitch.api import PluggedPort, VSwitch, VSwitchError

__all__ = ["Allocations", "Context", "PodResources", "VERBS", "add", "check", "delete", "gc",
           "replay", "status", "version"]

log = logging.getLogger(__name__)


# -- ADD ------------------------------------------------------------------------------------


def add(req: CniRequest, ctx: Context) -> str:
    conf = parse_netconf(req.config(), "ADD")
    namespace, name = pod_identity(req)
    check_netns(req.netns)
    device_id = device_id_of(conf) or device_of_pod(ctx, req, conf, namespace, name)
    slot = find_slot(ctx, conf, device_id)
    # Ownership before anything about the slot's state: another pod's device is refused
    # as not this pod's, whether or not its slot was prepared.
    ctx.pod_resources.check_allocated(namespace, name, slot.resource, device_id)
    backend = vswitch_for(ctx, slot)
    check_vswitch_up(ctx, slot, describe(device_id, f"{namespace}/{name}", req.container_id,
                                         req.ifname))
    mac = _mac(conf, req, device_id)
    devinfo = devinfo_file(conf.device_info_file, ctx.devinfo_root) \
        if conf.device_info_file else None
    _check_ipam(ctx, req, conf, slot)
    record = AttachmentRecord(
        device_id=device_id, network=conf.name, container_id=req.container_id,
        ifname=req.ifname, pod_namespace=namespace, pod_name=name, netns=req.netns,
        cni_path=req.path, cni_args=req.args.raw, mac=mac,
        device_info_file=str(devinfo) if devinfo else None,
        netconf={k: v for k, v in conf.raw.items() if k != "prevResult"})
    what = record.what

    with ctx.locks.hold(device_id):
        take_over(ctx, req, device_id, what)
        try:
            ctx.records.put(record)
        except OSError as exc:
            raise CniError(errors.IO_FAILURE, f"cannot record the attachment: {exc}",
                           f"check that {ctx.records.dir} is writable by the agent") from None
        done: set[str] = set()
        try:
            ipam, address = _plug_and_address(ctx, req, conf, slot, backend, record, devinfo,
                                              done)
            ctx.records.put(replace(record, state="added", vswitch_address=address))
        except BaseException as exc:
            # An IPAM ADD that failed cleaned up after itself (the spec asks plugins to);
            # its DEL would only fail again on the same config.
            failures = teardown(ctx, req, record, conf if "ipam" in done else None)
            if failures:
                log.error("ADD undo incomplete %s: %s", what, "; ".join(map(str, failures)))
            if isinstance(exc, CniError):
                raise
            if isinstance(exc, VSwitchError):
                raise vswitch_error(exc, f"plug of {what}") from None
            if isinstance(exc, OSError):
                raise CniError(errors.IO_FAILURE, f"ADD of {what} failed: {exc}") from None
            raise
    remember_shape(ctx, slot, conf)
    if "claimed" in done:
        metrics.observe_prepared_port(slot.pool, "claimed")
    log.info("attachment added %s network=%s mac=%s ips=%s%s", what, conf.name, mac,
             ",".join(ip.address for ip in ipam.ips) or "-",
             f" vswitch_address={address}" if address else "")
    iface = Interface(
        name=req.ifname, mac=mac, sandbox=req.netns,
        socket_path=str(slot.container_socket) if slot.kind != "dpdk-nic" else None,
        pci_id=(slot.pci_address or slot.device_id) if slot.kind == "dpdk-nic" else None,
        mtu=conf.mtu)
    return json.dumps(render_result(conf.cni_version, (iface,), ipam))


def _mac(conf: NetConf, req: CniRequest, device_id: str) -> str:
    """runtimeConfig.mac (the "mac" capability), else CNI_ARGS MAC, else a stable one."""
    if conf.mac:
        return normalize_mac(conf.mac, "runtimeConfig.mac")
    if req.args.mac:
        return normalize_mac(req.args.mac, "CNI_ARGS MAC", errors.INVALID_ENVIRONMENT)
    return stable_mac(device_id, req.container_id)


def _check_ipam(ctx: Context, req: CniRequest, conf: NetConf, slot: Slot) -> None:
    """Refuse before any change: an IPAM plugin missing from CNI_PATH, or a routed memif
    without IPAM."""
    if conf.ipam_type:
        ctx.ipam.find(conf.ipam_type, req.path)
    elif is_ip_mode(slot):
        raise CniError(errors.INVALID_NETWORK_CONFIG,
                       f"device {slot.device_id} is a memif in mode ip, and the network "
                       f"{conf.name} has no ipam section",
                       "a routed memif needs the container's address and a gateway, which the "
                       "vSwitch takes as its side of the link: add an ipam section (e.g. "
                       "host-local with a subnet)")


def _plug_and_address(ctx: Context, req: CniRequest, conf: NetConf, slot: Slot,
                      backend: VSwitch | None, record: AttachmentRecord, devinfo: Path | None,
                      done: set[str]) -> tuple[IpamResult, str | None]:
    """Plug the port in this thread while a worker runs IPAM ADD and writes the
    device-info file: the two are independent, and the plug mostly waits for
    ovs-vswitchd. The worker starts when the plug says its change is committed
    (``PortSpec.on_committed``; OVS: after its transaction, VPP: at once), so the exec'd
    IPAM plugin overlaps the wait instead of competing with the transaction, and a plug
    refused before any change leaves no lease to release. A memif in mode ip is the
    exception: the vSwitch's side needs an address on the pod's subnet, so IPAM runs
    first. numanet.json carries the IPs and, for
    a memif, the queue count the vSwitch chose: a memif's is written after the plug, any
    other's by the worker once IPAM is done, while the plug still waits (the container does
    not start before ADD answers, and an undo removes the file either way).
    ``done`` gets "ipam" once a lease is held, so a failure knows whether to release it,
    and "claimed" when the plug claimed a port prepared at Allocate.
    Returns the IPAM result and the vSwitch side's address (mode ip, else None)."""

    def address() -> IpamResult:
        result = IpamResult()
        if conf.ipam_type:
            result = ctx.ipam.add(req, conf)
            done.add("ipam")
        if not result.dns.to_json() and conf.dns:
            result = replace(result, dns=parse_dns(conf.dns, "dns"))
        if devinfo is not None:
            write_devinfo(devinfo, slot)
        return result

    owner, mac = record.owner, record.mac
    plugged: PluggedPort | None = None
    if is_ip_mode(slot):
        result = address()
        own_ip, vswitch_side = vswitch_address(result, record.what)
        if backend is not None:
            plugged = backend.plug(port_spec(backend, slot, conf, owner, mac, vswitch_side,
                                             take_over=True))
        peer = vswitch_side.partition("/")[0]
        view = ContainerView(conf.name, req.ifname, mac, result, conf.mtu,
                             queues=memif_queues(plugged), address=own_ip.address, peer=peer)
        write_container_config(slot, view)
        return result, vswitch_side

    def address_and_config() -> IpamResult:
        result = address()
        write_container_config(slot, ContainerView(conf.name, req.ifname, mac, result,
                                                   conf.mtu))
        return result

    memif = slot.kind == "memif"
    work = address if memif else address_and_config
    pending: list[Future[IpamResult]] = []

    def start() -> None:
        # Once the plug only waits for the vSwitch (PortSpec.on_committed): the exec'd IPAM
        # plugin then takes no CPU from the plug's own work.
        if not pending:
            pending.append(ctx.executor.submit(work))

    plug_error: BaseException | None = None
    try:
        if backend is not None:
            plugged = backend.plug(replace(port_spec(backend, slot, conf, owner, mac,
                                                     take_over=True), on_committed=start))
            if plugged.claimed:
                done.add("claimed")
    except BaseException as exc:
        plug_error = exc
    if plug_error is None:
        start()  # no vSwitch, or one that never said
    # Always wait for the worker, so a failed plug never leaves a lease or file being
    # written behind the undo.
    try:
        result = pending[0].result() if pending else IpamResult()
    except BaseException:
        if plug_error is None:
            raise
        result = IpamResult()
    if plug_error is not None:
        raise plug_error
    if memif:
        write_container_config(slot, ContainerView(conf.name, req.ifname, mac, result,
                                                   conf.mtu, queues=memif_queues(plugged)))
    return result, None


# -- DEL ------------------------------------------------------------------------------------


def delete(req: CniRequest, ctx: Context) -> str:
    conf = parse_netconf(req.config(), "DEL")
    device_id = device_id_of(conf)
    record = ctx.records.get(device_id) if device_id else None
    mine = record if record is not None and record.same_attachment(req.container_id,
                                                                   req.ifname) else None
    if mine is None:
        # The config names no device (Multus lost its cache) or another one than this
        # attachment holds: find the attachment by (container, ifname) instead.
        mine = ctx.records.find(req.container_id, req.ifname)
        if mine is not None:
            device_id = mine.device_id
        elif device_id is None:
            device_id = _device_of_port(ctx, req)
    what = describe(device_id, _pod_of(req, mine), req.container_id, req.ifname)
    failures: list[CniError] = []
    released = False
    if device_id is not None:
        with ctx.locks.hold(device_id):
            record = ctx.records.get(device_id)
            if record is not None and record.same_attachment(req.container_id, req.ifname):
                failures = teardown(ctx, req, record, conf)
                released = True
            else:
                # Another attachment holds the device now (or nothing does): only this
                # attachment's leftovers may go, never the holder's port.
                failures = remove_unrecorded(ctx, req, device_id, what)
    if not released and conf.ipam_type:
        try:
            ctx.ipam.delete(req, conf)
        except CniError as exc:
            failures.append(exc)
    if conf.device_info_file and not released:
        try:
            remove_file(devinfo_file(conf.device_info_file, ctx.devinfo_root))
        except (CniError, OSError) as exc:
            log.warning("device-info file not removed %s error=%s", what, exc)
    if failures:
        raise failures[0]
    log.info("DEL done %s network=%s", what, conf.name)
    return ""


def _pod_of(req: CniRequest, record: AttachmentRecord | None) -> str:
    """The pod the runtime names; a runtime may leave CNI_ARGS out (DEL), and then the
    attachment's record still knows whose it is."""
    return record.pod if record is not None and req.args.pod == "-" else req.args.pod


def _device_of_port(ctx: Context, req: CniRequest) -> str | None:
    for backend in ctx.vswitches.values():
        try:
            for port in backend.ports():
                if owner_matches(port, req.container_id, req.ifname):
                    return port.device_id
        except VSwitchError as exc:
            raise vswitch_error(exc, f"cannot list ports of vSwitch {backend.name} for "
                                     f"{describe(None, req.args.pod, req.container_id, req.ifname)}"
                                ) from None
    return None


# -- CHECK ----------------------------------------------------------------------------------


def check(req: CniRequest, ctx: Context) -> str:
    conf = parse_netconf(req.config(), "CHECK")
    check_netns(req.netns)
    if conf.prev_result is None:
        raise CniError(errors.INVALID_NETWORK_CONFIG, "CHECK without prevResult",
                       "the runtime must pass the result of the ADD as prevResult")
    device_id = device_id_of(conf)
    record = ctx.records.get(device_id) if device_id else \
        ctx.records.find(req.container_id, req.ifname)
    ours = record is not None and record.same_attachment(req.container_id, req.ifname)
    what = describe(record.device_id if record else device_id,
                    _pod_of(req, record if ours else None), req.container_id, req.ifname)
    if record is None or record.state != "added" or not ours:
        raise CniError(errors.CHECK_FAILED, f"no numanet attachment for {what}",
                       "the attachment was removed or never completed; delete and add the pod's "
                       "network again")
    slot = ctx.slots.slot(record.device_id)
    if slot is None:
        raise CniError(errors.CHECK_FAILED, f"device {record.device_id} is no longer advertised",
                       "its pool left the agent's configuration")
    backend = vswitch_for(ctx, slot)
    if backend is not None:
        port = find_port(backend, record.device_id, what)
        if port is None or not owner_allows(port, req.container_id, req.ifname):
            raise CniError(errors.CHECK_FAILED,
                           f"vSwitch {backend.name} has no port for {what}",
                           "the port was removed behind numanet's back; recreate the pod")
    path = config_path(slot)
    if path is not None and not path.is_file():
        raise CniError(errors.CHECK_FAILED, f"container config {path} is missing for {what}",
                       "recreate the pod's network")
    if record.device_info_file and not Path(record.device_info_file).is_file():
        raise CniError(errors.CHECK_FAILED,
                       f"device-info file {record.device_info_file} is missing for {what}",
                       "recreate the pod's network")
    interfaces, _ = parse_result(conf.prev_result, "prevResult")
    mine = [i for i in interfaces if i.name == req.ifname]
    if mine and mine[0].mac and record.mac and mine[0].mac.lower() != record.mac:
        raise CniError(errors.CHECK_FAILED,
                       f"prevResult says MAC {mine[0].mac} for {req.ifname}, numanet plugged "
                       f"{record.mac}", "recreate the pod's network")
    if conf.ipam_type:
        ctx.ipam.check(req, conf)
    return ""


# -- STATUS, GC, VERSION ------------------------------------------------------------------


def status(req: CniRequest, ctx: Context) -> str:
    """Ready when this network's ADDs could succeed: its pool is configured and the vSwitch
    that pool plugs into answers (a NIC pool needs none). A network that names no pool
    may get a device of any pool, so then every vSwitch the agent runs must answer."""
    conf = parse_netconf(req.config(), "STATUS")
    pool = _network_pool(ctx, conf)
    if pool is None:
        needed = sorted(ctx.vswitches)
        whose = f"network {conf.name} (no pool named: any vSwitch may serve it)"
    else:
        vswitch = ctx.slots.pool_vswitch(pool)
        needed = [vswitch] if vswitch else []
        whose = f"network {conf.name} (pool {pool})"
    for name in needed:
        backend = ctx.vswitches.get(name)
        if backend is None:
            raise CniError(errors.PLUGIN_NOT_AVAILABLE,
                           f"{whose} needs vSwitch {name}, which this agent does not run",
                           f"configure vswitches.{name} in the agent's config.yaml")
        health = backend.health()
        if not health.healthy:
            raise CniError(errors.PLUGIN_NOT_AVAILABLE,
                           f"vSwitch {name} of {whose} is not ready: {health.reason}",
                           "numanet cannot plumb this network's interfaces until it is")
    if conf.ipam_type and req.path:
        ctx.ipam.status(req, conf)
    return ""


def _network_pool(ctx: Context, conf: NetConf) -> str | None:
    """The agent's pool a network config names by ``pool`` or ``resourceName``; None when
    it names neither. A pool the agent does not serve means the network cannot work."""
    if conf.pool is None and conf.resource_name is None:
        return None
    pool = conf.pool or (conf.resource_name or "").partition("/")[2]
    resource = ctx.slots.pool_resource(pool)
    if resource is None:
        raise CniError(errors.PLUGIN_NOT_AVAILABLE,
                       f"network {conf.name} wants pool {pool}, which the numanet agent does "
                       "not serve", "add the pool to the agent's config.yaml, or correct the "
                       "network's pool/resourceName")
    if conf.resource_name is not None and conf.resource_name != resource:
        raise CniError(errors.PLUGIN_NOT_AVAILABLE,
                       f"network {conf.name} wants resource {conf.resource_name}, the agent "
                       f"serves pool {pool} as {resource}",
                       "the network's resourceName must be <resourcePrefix>/<pool> as the "
                       "agent's config.yaml names it")
    return pool


def gc(req: CniRequest, ctx: Context) -> str:
    conf = parse_netconf(req.config(), "GC")
    if conf.valid_attachments is None:
        raise CniError(errors.INVALID_NETWORK_CONFIG, "GC without cni.dev/valid-attachments",
                       "the runtime passes the attachments that stay; an empty list removes all")
    valid = {(a.container_id, a.ifname) for a in conf.valid_attachments}
    failures: list[CniError] = []
    removed = 0
    for stale in ctx.records.all():
        if stale.network != conf.name or (stale.container_id, stale.ifname) in valid:
            continue
        with ctx.locks.hold(stale.device_id):
            record = ctx.records.get(stale.device_id)
            if record is None or not record.same_attachment(stale.container_id, stale.ifname):
                continue  # removed or replaced while we waited
            ipam_conf = record_netconf(record) or conf
            failures += teardown(ctx, req, record, ipam_conf)
            removed += 1
    if conf.ipam_type:
        try:
            ctx.ipam.gc(req, conf)
        except CniError as exc:
            failures.append(exc)
    release_unheld(ctx)
    log.info("GC network=%s removed=%d kept=%d", conf.name, removed, len(valid))
    if failures:
        raise failures[0]
    return ""


def version(req: CniRequest, ctx: Context | None = None) -> str:
    return json.dumps({"cniVersion": version_of(read_document(req.stdin)),
                       "supportedVersions": list(SUPPORTED_VERSIONS)})


VERBS: dict[str, Callable[[CniRequest, Context], str]] = {
    "ADD": add, "DEL": delete, "CHECK": check, "STATUS": status, "GC": gc, "VERSION": version,
}

