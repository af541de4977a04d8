"""Checks and lookups shared by the verbs: who is calling, which slot, which vSwitch,
which port; each failure is a CniError that says what to do."""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import stat

from cni import errors
from cni.context import Context
from cni.errors import CniError
from cni.netconf import NetConf
from cni.request import CniRequest
from cni.result import IpamResult, IpConfig
from deviceplugin import naming
from deviceplugin.slots import Slot
from vswitch.api import (
    TAG_MEMIF_QUEUES,
    Owner,
    PluggedPort,
    PortSpec,
    VSwitch,
    VSwitchError,
    VSwitchUnavailable,
)

log = logging.getLogger(__name__)

_NS_GET_NSTYPE = 0xB703  # ioctl: which namespace type an nsfs file is
_CLONE_NEWNET = 0x40000000


def pod_identity(req: CniRequest) -> tuple[str, str]:
    if not req.args.pod_namespace or not req.args.pod_name:
        raise CniError(errors.INVALID_ENVIRONMENT,
                       "CNI_ARGS has no K8S_POD_NAMESPACE and K8S_POD_NAME",
                       "numanet checks with the kubelet that the device belongs to the pod, so it "
                       "needs the pod's name: call it through Multus or a Kubernetes runtime")
    return req.args.pod_namespace, req.args.pod_name


def check_netns(path: str) -> None:
    """The container's network namespace must exist and be one (nsfs, type net)."""
    not_netns = CniError(errors.INVALID_ENVIRONMENT, f"CNI_NETNS {path} is not a network namespace",
                         "pass /proc/<pid>/ns/net or a bind mount of it (/var/run/netns/<name>)")
    try:
        # An nsfs file is a regular file; anything else is refused before it is opened, as
        # opening a FIFO would block this call and opening a device may act on it.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise not_netns
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CniError(errors.UNKNOWN_CONTAINER, f"network namespace {path} does not exist",
                       "the container is gone, or the runtime passed a wrong CNI_NETNS") from None
    except OSError as exc:
        raise CniError(errors.INVALID_ENVIRONMENT, f"cannot open CNI_NETNS {path}: {exc.strerror}",
                       "pass the path of the container's network namespace") from None
    try:
        nstype = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        nstype = None
    finally:
        os.close(fd)
    if nstype != _CLONE_NEWNET:
        raise not_netns


def device_of_pod(ctx: Context, req: CniRequest, conf: NetConf, namespace: str,
                  name: str) -> str:
    """The device of a network config that names none, asked of the kubelet.

    A runtime calling numanet itself, not through Multus (containerd with several
    networks in its CNI directory, CRI-O's default network), passes no deviceID: the
    pod's device is then the one device of the network's resource that the kubelet gave
    the pod and no other attachment holds. The kubelet is the source, so the device is
    the pod's own by construction (ADD still checks it as for any other). Anything but
    one such device is refused: the network must name the pool, and a pod with two
    devices of it must have them named (Multus passes deviceID)."""
    if conf.resource_name is not None:
        resource = conf.resource_name
    elif conf.pool is not None:
        pool_resource = ctx.slots.pool_resource(conf.pool)
        if pool_resource is None:
            raise CniError(errors.INVALID_NETWORK_CONFIG,
                           f"pool {conf.pool} is not configured in the numanet agent",
                           "name a pool from the agent's config.yaml")
        resource = pool_resource
    else:
        raise CniError(errors.INVALID_NETWORK_CONFIG,
                       "no deviceID in the network configuration, and no pool or "
                       "resourceName to ask the kubelet for the pod's device",
                       "the pod must request the numanet resource and the "
                       "NetworkAttachmentDefinition must carry the "
                       "k8s.v1.cni.cncf.io/resourceName annotation, so that Multus passes "
                       "the allocated deviceID; a runtime calling numanet itself needs "
                       "\"pool\" or \"resourceName\" in the network config")
    held = (ctx.pod_resources.pod_devices(namespace, name) or {}).get(resource, set())
    free = []
    for device_id in sorted(held):
        # Checked before it names a record file, though the kubelet said it.
        try:
            naming.validate_device_id(device_id)
        except naming.InvalidName:
            raise CniError(errors.UNKNOWN_DEVICE,
                           f"the kubelet lists device {device_id[:80]!r} of {resource} for pod "
                           f"{namespace}/{name}, which is no numanet device ID",
                           "numanet advertises <pool>-n<numa>-<index> or PCI addresses only"
                           ) from None
        record = ctx.records.get(device_id)
        if record is None or record.same_attachment(req.container_id, req.ifname):
            free.append(device_id)
    if len(free) == 1:
        return free[0]
    if not free:
        raise CniError(errors.DEVICE_NOT_ALLOCATED,
                       f"the network config names no deviceID and the kubelet gave pod "
                       f"{namespace}/{name} no free device of {resource}"
                       + (f" (it holds {', '.join(sorted(held))}, all attached)" if held else ""),
                       f"request {resource} in the pod's containers, one per network")
    raise CniError(errors.INVALID_NETWORK_CONFIG,
                   f"the network config names no deviceID and pod {namespace}/{name} holds "
                   f"{len(free)} devices of {resource} not attached: {', '.join(free)}",
                   "name the device in the network config (Multus passes deviceID)")


def device_id_of(conf: NetConf) -> str | None:
    """The config's device ID, checked before it names a file or a port; None if none."""
    if conf.device_id is None:
        return None
    try:
        return naming.validate_device_id(conf.device_id)
    except naming.InvalidName as exc:
        raise CniError(errors.INVALID_NETWORK_CONFIG, str(exc),
                       "deviceID must be an ID the numanet device plugin advertised") from None


def find_slot(ctx: Context, conf: NetConf, device_id: str) -> Slot:
    slot = ctx.slots.slot(device_id)
    if slot is None:
        raise CniError(errors.UNKNOWN_DEVICE, f"numanet advertises no device {device_id}",
                       "the deviceID must be one the kubelet allocated from a numanet resource")
    if conf.pool is not None:
        if ctx.slots.pool_resource(conf.pool) is None:
            raise CniError(errors.INVALID_NETWORK_CONFIG,
                           f"pool {conf.pool} is not configured in the numanet agent",
                           "name a pool from the agent's config.yaml")
        if slot.pool != conf.pool:
            raise CniError(errors.DEVICE_MISMATCH,
                           f"device {device_id} is from pool {slot.pool}, the network wants "
                           f"pool {conf.pool}",
                           "request the resource of this network's pool in the pod "
                           f"({ctx.slots.pool_resource(conf.pool)})")
    if conf.resource_name is not None and slot.resource != conf.resource_name:
        raise CniError(errors.DEVICE_MISMATCH,
                       f"device {device_id} is of resource {slot.resource}, the network wants "
                       f"{conf.resource_name}",
                       "the NetworkAttachmentDefinition's resourceName and the config must agree")
    return slot


def vswitch_for(ctx: Context, slot: Slot) -> VSwitch | None:
    if slot.kind == "dpdk-nic":
        return None
    backend = ctx.vswitches.get(slot.vswitch or "")
    if backend is None:
        raise CniError(errors.PLUGIN_NOT_AVAILABLE,
                       f"device {slot.device_id} needs vSwitch {slot.vswitch}, which this agent "
                       "does not run",
                       f"configure vswitches.{slot.vswitch} in the agent's config.yaml")
    if slot.host_dir is None or not slot.host_dir.is_dir():
        raise CniError(errors.IO_FAILURE, f"slot directory {slot.host_dir} does not exist",
                       "the device plugin prepares it when the kubelet allocates the device; "
                       "check the agent log for Allocate errors")
    return backend


def check_vswitch_up(ctx: Context, slot: Slot, what: str) -> None:
    """Refuse at once (11) a change on a vSwitch the agent's health probe found down: the
    plug would only wait out its timeout for a vswitchd that is not there. ``what``
    (``describe``) names the call."""
    if slot.kind == "dpdk-nic" or not slot.vswitch:
        return
    reason = ctx.vswitch_down(slot.vswitch)
    if reason is not None:
        raise CniError(errors.TRY_AGAIN_LATER,
                       f"vSwitch {slot.vswitch} is down, ADD of {what} refused: {reason}",
                       "the agent's health probe finds it down, so nothing was changed; the "
                       "runtime retries, and the device's slot turns Healthy when it is back")


def port_spec(backend: VSwitch, slot: Slot, conf: NetConf, owner: Owner,
              mac: str | None, ip_address: str | None = None, *,
              take_over: bool = False) -> PortSpec:
    """The vSwitch port of a socket slot, as the network config and the slot say.

    ``ip_address`` is the vSwitch side's address of a memif in mode ip (see
    ``vswitch_address``); ``take_over``: the ADD's plug, which may replace a stale port
    (``PortSpec.take_over``). Ring and buffer sizes go to memif ports only: a vhost-user
    ring is sized by the virtio driver in the container, and neither OVS nor VPP takes a
    size for it (numanet.json carries the pool's values to the container instead).
    """
    assert slot.host_socket is not None
    memif = slot.kind == "memif"
    return PortSpec(
        device_id=slot.device_id, kind=slot.kind,  # type: ignore[arg-type]
        container_role=slot.container_role or "", socket_path=str(slot.host_socket),
        network=_network_for(backend, conf), owner=owner, mac=mac, mtu=conf.mtu, vlan=conf.vlan,
        memif_mode=slot.memif_mode or "ethernet", memif_id=0,
        ring_size=slot.ring_size if memif else None,
        buffer_size=slot.buffer_size if memif else None,
        ip_address=ip_address if is_ip_mode(slot) else None, take_over=take_over)


def is_ip_mode(slot: Slot) -> bool:
    """A memif in mode ip: routed by the vSwitch, which needs an address on the pod's subnet."""
    return slot.kind == "memif" and slot.memif_mode == "ip"


def vswitch_address(ipam: IpamResult, what: str) -> tuple[IpConfig, str]:
    """(the container's IP, the vSwitch side's address in CIDR form) of an ip-mode memif.

    The vSwitch takes the gateway IPAM gave the container, with the container's prefix
    length: the container then reaches the gateway over the memif, and the vSwitch routes
    the container's subnet to it. The first IP whose gateway lies in its own subnet is
    used (one address per port: the VPP backend configures one).

    Known limit: VPP refuses a prefix that overlaps one on another interface of the same
    table, so a real VPP takes one ip-mode memif per subnet this way. Several pods on one
    subnet need the backend to make each memif unnumbered to a loopback holding the
    gateway and to route each pod's own address to its memif.
    """
    for ip in ipam.ips:
        iface = ipaddress.ip_interface(ip.address)
        if not ip.gateway:
            continue
        gateway = ipaddress.ip_address(ip.gateway)
        if gateway in iface.network and gateway != iface.ip:
            return ip, f"{gateway}/{iface.network.prefixlen}"
    got = ", ".join(f"{ip.address} gateway {ip.gateway or 'none'}" for ip in ipam.ips)
    raise CniError(errors.INVALID_NETWORK_CONFIG,
                   f"memif mode ip of {what} needs a gateway in the container's subnet from "
                   f"IPAM (it gave {got or 'no IP'})",
                   "the vSwitch takes the gateway as its side of the link: set "
                   "ipam.ranges[].gateway (host-local's default is the subnet's first address)")


def _network_for(backend: VSwitch, conf: NetConf) -> str:
    """OVS: the config's bridge, else the backend's own (config.yaml's vswitches.ovs.bridge).
    VPP: one bridge domain per numanet network, named after it."""
    if conf.bridge:
        return conf.bridge
    return conf.name if backend.name == "vpp" else ""


def vswitch_error(exc: VSwitchError, what: str) -> CniError:
    if isinstance(exc, VSwitchUnavailable):
        return CniError(errors.TRY_AGAIN_LATER, f"{what}: {exc}",
                        "the vSwitch is down or restarting; the runtime retries")
    return CniError(errors.VSWITCH_FAILURE, f"{what}: {exc}", "see the vSwitch log")


def find_port(backend: VSwitch | None, device_id: str,
              what: str | None = None) -> PluggedPort | None:
    """The port of ``device_id``; ``what`` (``describe``) names the call in errors."""
    if backend is None:
        return None
    try:
        return backend.port(device_id)
    except VSwitchError as exc:
        raise vswitch_error(exc, f"cannot look up the port on vSwitch {backend.name} for "
                                 f"{what or f'device_id={device_id}'}") from None


def owner_matches(port: PluggedPort, container_id: str, ifname: str) -> bool:
    """The port's owner tags name this very attachment (no record to go by)."""
    return port.owner.container_id == container_id and port.owner.ifname == ifname


def owner_allows(port: PluggedPort, container_id: str, ifname: str) -> bool:
    """For a caller holding the device's record (read under its lock) for this attachment:
    the port's owner does not contradict it. A backend that cannot tell the owner reports
    an empty one (VPP's tags carry only the device ID, and a backend that restarted knows
    the owner only once adoption ran), which counts as the record's; a port tagged with
    another attachment is still never touched."""
    if not port.owner.container_id and not port.owner.ifname:
        return True
    return owner_matches(port, container_id, ifname)


def memif_queues(plugged: PluggedPort | None) -> int | None:
    """Queue pairs the vSwitch asks the container's memif to open (its tag), or None when
    it leaves the count to the container. A tag numanet cannot read is a vSwitch fault:
    a container guessing a count might receive nothing."""
    text = plugged.tags.get(TAG_MEMIF_QUEUES) if plugged is not None else None
    if text is None:
        return None
    try:
        queues = int(text)
    except ValueError:
        queues = 0
    if not 1 <= queues <= 255:
        raise VSwitchError(f"port {plugged.port_name if plugged else '?'} says the container "
                           f"must open {text!r} memif queue pairs, which is not a count of "
                           "1 to 255 (DPDK memif's limit)")
    return queues


def switches_holding(ctx: Context, slot: Slot | None) -> list[VSwitch]:
    """The vSwitches that may hold a device's port: its slot's own; none for a NIC (it has
    no port) or for a vSwitch this agent does not run; every one when the slot is no
    longer known (its pool left the config), as the port may still exist anywhere."""
    if slot is None:
        return list(ctx.vswitches.values())
    backend = ctx.vswitches.get(slot.vswitch or "") if slot.kind != "dpdk-nic" else None
    return [backend] if backend is not None else []


def held_devices(ctx: Context, meanwhile: str) -> set[tuple[str, str]] | None:
    """(resource, device ID) the kubelet lists for any pod; None when it cannot be asked,
    logged with ``meanwhile``, what the caller does instead."""
    try:
        return ctx.pod_resources.held_devices()
    except CniError as exc:
        log.warning("kubelet pod-resources unavailable, %s: %s", meanwhile, exc.msg)
        return None
