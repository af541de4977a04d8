"""The pod's view: every numanet interface of this container, with its CPUs and hugepages.

Sources, most trusted first: each slot's ``numanet.json`` (numanet's CNI wrote it for
exactly this attachment), Multus's network-status in ``/etc/podnetinfo/annotations``
(network name, interface name, IPs, MAC, device-info), device-info files, and the
environment Allocate set (``NUMANET_<POOL>``: the device IDs, ``..._NUMA``: their nodes).
An interface is listed once, matched across sources by socket path, PCI address or
interface name. Reading changes nothing and needs no privilege.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from app import devinfo, hugepages, podnetinfo, slotconfig, sysfs
from app.devinfo import DeviceInfo
from app.hugepages import HugeMount
from app.roots import Roots
from app.slotconfig import SlotDir

LAST = 1 << 30  # sort position of an interface network-status does not list


@dataclass(frozen=True)
class IpAddress:
    address: str  # CIDR from numanet.json; network-status gives bare addresses
    gateway: str | None = None


@dataclass(frozen=True)
class Route:
    dst: str
    gw: str | None = None


@dataclass(frozen=True)
class Interface:
    kind: str  # vhost-user | memif | dpdk-nic
    network: str | None = None
    ifname: str | None = None
    device_id: str | None = None
    pool: str | None = None
    # The container's side: vhost-user mode server|client, memif role master|slave.
    role: str | None = None
    socket: str | None = None  # as the container sees it
    pci_address: str | None = None
    mac: str | None = None
    ips: tuple[IpAddress, ...] = ()
    routes: tuple[Route, ...] = ()
    mtu: int | None = None
    queues: int | None = None  # memif: queue pairs the vSwitch sends on
    numa_node: int | None = None
    memif_mode: str | None = None
    memif_id: int | None = None
    ring_size: int | None = None
    buffer_size: int | None = None
    address: str | None = None  # memif mode ip: the container's own address (CIDR)
    peer: str | None = None  # memif mode ip: the vSwitch side, the gateway
    sources: tuple[str, ...] = ()
    position: int = field(default=LAST, compare=False)  # in network-status

    @property
    def label(self) -> str:
        """How messages name it: the interface name, else its device."""
        return self.ifname or self.device_id or self.pci_address or self.kind

    def to_json(self) -> dict[str, Any]:
        return {
            "network": self.network, "ifname": self.ifname, "kind": self.kind,
            "role": self.role, "deviceID": self.device_id, "pool": self.pool,
            "socketPath": self.socket, "pciAddress": self.pci_address, "mac": self.mac,
            "ips": [_drop_none({"address": ip.address, "gateway": ip.gateway})
                    for ip in self.ips],
            "routes": [_drop_none({"dst": r.dst, "gw": r.gw}) for r in self.routes],
            "mtu": self.mtu, "queues": self.queues, "numaNode": self.numa_node,
            "memifMode": self.memif_mode, "memifId": self.memif_id,
            "ringSize": self.ring_size, "bufferSize": self.buffer_size,
            "address": self.address, "peer": self.peer, "sources": list(self.sources),
        }


@dataclass(frozen=True)
class PodView:
    interfaces: tuple[Interface, ...]
    cpus: frozenset[int]  # the CPUs this process may run on
    node_cpus: Mapping[int, frozenset[int]]  # NUMA node -> CPUs; empty: no NUMA
    huge_mounts: tuple[HugeMount, ...] = ()
    huge_budget: Mapping[int, int | None] = field(default_factory=dict)  # page KiB -> MiB
    container: str | None = None
    hostname: str = ""
    warnings: tuple[str, ...] = ()

    def node_of(self, cpu: int) -> int | None:
        return next((n for n, cpus in self.node_cpus.items() if cpu in cpus), None)


@dataclass(frozen=True)
class _Held:
    variable: str  # NUMANET_<POOL>
    nodes: tuple[int, ...]  # from NUMANET_<POOL>_NUMA


def read_view(roots: Roots, env: Mapping[str, str] | None = None,
              cpus: Iterable[int] | None = None) -> PodView:
    """Everything the container can learn about its numanet interfaces and resources;
    ``cpus`` None: this process's affinity."""
    env = os.environ if env is None else env
    interfaces, warnings = read_interfaces(roots, env)
    container, budget = podnetinfo.hugepage_budget(roots.podnetinfo, env.get("CONTAINER_NAME"))
    return PodView(
        interfaces=tuple(interfaces),
        cpus=frozenset(os.sched_getaffinity(0) if cpus is None else cpus),
        node_cpus=sysfs.node_cpus(roots.sysfs),
        huge_mounts=tuple(hugepages.read_mounts(roots.mounts)),
        # The webhook's files name this container's request; the cgroup's limit is the
        # fallback (a pod without the webhook).
        huge_budget={**hugepages.cgroup_budget(roots.sysfs), **budget},
        container=container,
        hostname=env.get("HOSTNAME") or socket.gethostname(),
        warnings=tuple(warnings))


def read_interfaces(roots: Roots, env: Mapping[str, str]) -> tuple[list[Interface], list[str]]:
    """(the container's numanet interfaces in network-status order, notes about slots
    that could not be listed)."""
    held = _held_devices(env)
    slots = slotconfig.read_slots(roots.slots)
    annotations = roots.podnetinfo / "annotations"
    statuses = podnetinfo.network_status(podnetinfo.read_downward_file(annotations),
                                         str(annotations))
    found = [from_config(s.config, s.pool, s.device_id) for s in slots if s.config]
    for entry in statuses:
        info = devinfo.parse(entry.device_info)
        index = _match(found, entry, info)
        if index is not None:
            found[index] = _with_status(found[index], entry)
        elif info is not None and _is_numanet(info, held):
            found.append(_with_status(from_device_info(info, "network-status"), entry))
    warnings = _add_unconfigured(found, slots, roots)
    pcis = {i.pci_address for i in found}
    for device_id in held:  # NICs Allocate gave that nothing else names
        if slotconfig.is_pci_address(device_id) and device_id not in pcis:
            found.append(Interface("dpdk-nic", device_id=device_id, pci_address=device_id,
                                   sources=("env",)))
    found = [_with_numa(_with_pool(i, held), roots, held) for i in found]
    found.sort(key=lambda i: (i.position, _natural(i.ifname or ""), i.device_id or ""))
    return found, warnings


def _add_unconfigured(found: list[Interface], slots: list[SlotDir], roots: Roots) -> list[str]:
    """Slots without numanet.json that nothing listed yet: from their device-info file
    when one is mounted, else a note (their network's ADD has not run)."""
    sockets = {i.socket for i in found}
    pending = [s for s in slots if not s.config
               and slotconfig.container_socket(s.pool, s.device_id) not in sockets]
    files = devinfo.read_files(roots.devinfo, [s.device_id for s in pending])
    warnings = []
    for slot in pending:
        if slot.device_id in files:
            found.append(replace(from_device_info(files[slot.device_id], "device-info"),
                                 device_id=slot.device_id, pool=slot.pool))
        else:
            warnings.append(_pending_note(slot))
    return warnings


def from_config(doc: Mapping[str, Any], pool: str | None = None,
                device_id: str | None = None) -> Interface:
    """An interface from one numanet.json (checked by slotconfig.check_config)."""
    device_id = doc.get("deviceID") or device_id
    pool = doc.get("pool") or pool
    kind = doc["kind"]
    socket_path = doc.get("socketPath")
    if socket_path is None and kind != "dpdk-nic" and pool and device_id:
        socket_path = slotconfig.container_socket(pool, device_id)
    return Interface(
        kind=kind, network=doc.get("network"), ifname=doc.get("ifname"),
        device_id=device_id, pool=pool,
        role=doc.get("mode") if kind == "vhost-user" else doc.get("role"),
        socket=socket_path, pci_address=doc.get("pciAddress"), mac=doc.get("mac"),
        ips=tuple(IpAddress(ip["address"], ip.get("gateway")) for ip in doc.get("ips") or []),
        routes=tuple(Route(r["dst"], r.get("gw")) for r in doc.get("routes") or []),
        mtu=doc.get("mtu"), queues=doc.get("queues"), numa_node=doc.get("numaNode"),
        memif_mode=doc.get("memifMode"), memif_id=doc.get("memifId"),
        ring_size=doc.get("ringSize"), buffer_size=doc.get("bufferSize"),
        address=doc.get("address"), peer=doc.get("peer"), sources=("numanet.json",))


def from_device_info(info: DeviceInfo, source: str) -> Interface:
    device_id = pool = None
    if info.socket:
        # /run/numanet/<pool>/<deviceID>/sock
        parts = info.socket.split("/")
        if len(parts) == 6 and slotconfig.is_slot_id(parts[4]):
            pool, device_id = parts[3], parts[4]
    return Interface(info.kind, role=info.role, socket=info.socket,
                     pci_address=info.pci_address, memif_mode=info.memif_mode,
                     memif_id=0 if info.kind == "memif" else None,
                     device_id=device_id or info.pci_address, pool=pool, sources=(source,))


def _held_devices(env: Mapping[str, str]) -> dict[str, _Held]:
    """Device IDs in ``NUMANET_<POOL>`` variables; others named NUMANET_* (the kit's own
    settings, ``..._NUMA``) hold no device IDs and are skipped by their values."""
    held: dict[str, _Held] = {}
    for name, value in sorted(env.items()):
        if not name.startswith("NUMANET_"):
            continue
        ids = [v.strip() for v in value.split(",") if v.strip()]
        if not ids or not all(slotconfig.is_slot_id(i) or slotconfig.is_pci_address(i)
                              for i in ids):
            continue
        numa = env.get(f"{name}_NUMA", "")
        nodes = tuple(int(n) for n in numa.split(",") if n.strip().isdigit())
        for device_id in ids:
            held[device_id] = _Held(name, nodes)
    return held


def _is_numanet(info: DeviceInfo, held: Mapping[str, _Held]) -> bool:
    if info.socket is not None:
        return info.socket.startswith(slotconfig.CONTAINER_SLOTS + "/")
    return info.pci_address in held


def _match(found: list[Interface], entry: podnetinfo.StatusEntry,
           info: DeviceInfo | None) -> int | None:
    for index, iface in enumerate(found):
        if info is not None and ((info.socket and info.socket == iface.socket)
                                 or (info.pci_address and info.pci_address == iface.pci_address)):
            return index
    if info is None and entry.interface:
        return next((i for i, f in enumerate(found) if f.ifname == entry.interface), None)
    return None


def _with_status(iface: Interface, entry: podnetinfo.StatusEntry) -> Interface:
    """numanet.json wins; network-status fills in, and its network name (namespace/name,
    the NetworkAttachmentDefinition) is the one users know."""
    return replace(
        iface, network=entry.name or iface.network, ifname=iface.ifname or entry.interface,
        mac=iface.mac or entry.mac, mtu=iface.mtu or entry.mtu,
        ips=iface.ips or tuple(IpAddress(ip) for ip in entry.ips),
        sources=_add(iface.sources, "network-status"), position=entry.index)


def _with_pool(iface: Interface, held: Mapping[str, _Held]) -> Interface:
    """A NIC's pool, known only from its NUMANET_<POOL> variable: spelt as the variable
    spells it (pool names' '-' are '_' there)."""
    holder = held.get(iface.device_id or "")
    if iface.pool or holder is None:
        return iface
    return replace(iface, pool=holder.variable[len("NUMANET_"):].lower().replace("_", "-"))


def _with_numa(iface: Interface, roots: Roots, held: Mapping[str, _Held]) -> Interface:
    """numanet.json's numaNode, else the NIC's sysfs node, the node in the slot ID, or the
    only node in NUMANET_<POOL>_NUMA."""
    if iface.numa_node is not None:
        return iface
    node: int | None = None
    source: str | None = None
    if iface.pci_address:
        node, source = sysfs.pci_numa_node(roots.sysfs, iface.pci_address), "sysfs"
    if node is None and iface.device_id:
        node, source = slotconfig.slot_numa(iface.device_id), None
    holder = held.get(iface.device_id or "")
    if node is None and holder is not None and len(holder.nodes) == 1:
        node, source = holder.nodes[0], "env"
    if node is None:
        return iface
    return replace(iface, numa_node=node,
                   sources=_add(iface.sources, source) if source else iface.sources)


def _pending_note(slot: SlotDir) -> str:
    return (f"slot {slot.device_id} ({slot.path}) has no {slotconfig.CONFIG_NAME} yet: no "
            "network was attached with it; name the network in the pod's "
            "k8s.v1.cni.cncf.io/networks annotation (skipped)")


def _add(sources: tuple[str, ...], source: str) -> tuple[str, ...]:
    return sources if source in sources else (*sources, source)


def _natural(text: str) -> list[Any]:
    """net2 before net10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _drop_none(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if v is not None}
