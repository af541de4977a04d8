"""Ports made at Allocate, before the pod's CNI ADD, and removed when no pod came for them.

The kubelet calls Allocate when it admits a pod; the runtime calls the CNI ADD later,
once volumes are mounted and the sandbox exists (typically a hundred milliseconds or
more). Setting up an OVS-DPDK port is the slow part of an ADD (ovs-vswitchd creates the
DPDK device and reloads its PMD threads), so the agent does it in that gap: after each
Allocate it asks the slot's vSwitch to ``prepare`` the port, unowned and tagged
"prepared". The ADD then checks with the kubelet that the device is the pod's, as
always, and the plug only claims the port (one OVSDB write of its owner tags).

The port takes the shape of the last ADD on the same pool (bridge, MTU, VLAN of that
network; after an agent restart, of an attachment it recorded), else the vSwitch's
defaults. An ADD asking for another VLAN or MTU has them set
on the claimed port; one asking for another bridge gets a port made anew, exactly as
without preparation. Nothing here can fail an Allocate: it runs in the
CNI's worker pool after Allocate answered, and a port that cannot be prepared is simply
plugged by the ADD, which then reports the error to the runtime.

A prepared port no pod claimed goes when the device plugin releases the device's
allocation (CNI GC, agent restart), never while the device is allocated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future

from cni import metrics
from cni.context import Context
from cni.lookups import is_ip_mode, port_spec, switches_holding
from cni.netconf import NetConf
from cni.teardown import record_netconf
from deviceplugin.slots import Slot
from vswitch.api import Owner, PluggedPort, VSwitch, VSwitchError

log = logging.getLogger(__name__)

_DEFAULT_SHAPE = NetConf(cni_version="1.1.0", name="")


def prepare_ports(ctx: Context, slots: Sequence[Slot]) -> list[Future[PluggedPort | None]]:
    """Prepare the ports of just-allocated slots in the background; the futures are for
    tests and benchmarks (the agent does not wait for them)."""
    futures = []
    for slot in slots:
        if _preparable(ctx, slot) is None:
            continue
        try:
            futures.append(ctx.background.submit(prepare_port, ctx, slot))
        except RuntimeError:  # the CNI service is stopping: the ADD will make the port
            log.info("port not prepared device_id=%s pool=%s: the agent is stopping",
                     slot.device_id, slot.pool)
    return futures


def prepare_port(ctx: Context, slot: Slot) -> PluggedPort | None:
    """Make the slot's port unless an attachment holds the device; never raises."""
    backend = _preparable(ctx, slot)
    if backend is None:
        return None
    with ctx.locks.hold(slot.device_id):
        if ctx.records.get(slot.device_id) is not None:
            # An attachment of an earlier pod still holds the device: the new pod's ADD
            # takes it over (teardown first), so there is nothing to prepare.
            return None
        conf = _shape(ctx, slot.pool)
        try:
            port = backend.prepare(port_spec(backend, slot, conf, Owner(), None))
        except VSwitchError as exc:
            log.info("port not prepared device_id=%s pool=%s vswitch=%s (the ADD plugs it): %s",
                     slot.device_id, slot.pool, backend.name, exc)
        except Exception:  # noqa: BLE001 - a worker's failure must not go unseen
            log.exception("port preparation crashed device_id=%s pool=%s", slot.device_id,
                          slot.pool)
        else:
            if port is not None and port.prepared:
                metrics.observe_prepared_port(slot.pool, "prepared")
            return port
        metrics.observe_prepared_port(slot.pool, "failed")
        return None


def _shape(ctx: Context, pool: str) -> NetConf:
    """The network config of the pool's last ADD; after an agent restart, that of an
    attachment recorded on disk, so the first pods after a restart get fitting ports too."""
    conf = ctx.port_shapes.get(pool)
    if conf is None:
        for record in ctx.records.all():
            slot = ctx.slots.slot(record.device_id)
            if slot is not None and slot.pool == pool:
                conf = record_netconf(record)
                if conf is not None:
                    break
        conf = ctx.port_shapes.setdefault(pool, conf or _DEFAULT_SHAPE)
    return conf


def remember_shape(ctx: Context, slot: Slot, conf: NetConf) -> None:
    """The next prepared port of this pool takes the shape of this successful ADD."""
    if slot.kind != "dpdk-nic":
        ctx.port_shapes[slot.pool] = conf


def remove_prepared(ctx: Context, device_id: str) -> bool:
    """Remove the prepared (unclaimed) port of a device no pod holds; True if one went.
    Held under the device's lock, so an ADD claiming the port meanwhile is never undone."""
    slot = ctx.slots.slot(device_id)
    backends = switches_holding(ctx, slot)
    removed = False
    with ctx.locks.hold(device_id):
        if ctx.records.get(device_id) is not None:
            return False
        if ctx.allocations is not None and device_id in ctx.allocations.all():
            return False  # given out again meanwhile: the port is the new pod's
        for backend in backends:
            try:
                port = backend.port(device_id)
                if port is not None and port.prepared and backend.unplug(device_id):
                    removed = True
                    metrics.observe_prepared_port(slot.pool if slot else "-", "removed")
            except VSwitchError as exc:
                log.warning("prepared port not removed device_id=%s vswitch=%s: %s",
                            device_id, backend.name, exc)
    return removed


def remove_unallocated(ctx: Context, vswitch: str, allocated: set[str]) -> list[str]:
    """Remove the prepared ports on ``vswitch`` whose device is not in ``allocated`` (an
    agent that restarted: the pod they were made for never came, or went)."""
    backend = ctx.vswitches.get(vswitch)
    if backend is None:
        return []
    removed = []
    for port in backend.ports():
        if port.prepared and port.device_id not in allocated \
                and remove_prepared(ctx, port.device_id):
            removed.append(port.device_id)
    if removed:
        log.info("removed prepared ports no allocation holds vswitch=%s devices=%s", vswitch,
                 ",".join(removed))
    return removed


def _preparable(ctx: Context, slot: Slot) -> VSwitch | None:
    """The slot's vSwitch when the slot has a port to prepare: a socket slot (a memif in
    mode ip needs the pod's address first) on a vSwitch this agent runs."""
    if slot.kind == "dpdk-nic" or is_ip_mode(slot) or slot.host_socket is None:
        return None
    return ctx.vswitches.get(slot.vswitch or "")
