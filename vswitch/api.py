"""The one interface every vSwitch backend implements (os-vif style: plug/unplug).

A backend knows nothing about Kubernetes: it gets a ``PortSpec`` naming a slot's
socket and the tags to put on what it creates, and it can list what it owns from those
tags after a restart. Backends: ``vswitch.ovs`` (ovsdbapp) and ``vswitch.vpp`` (vpp-papi).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

PortKind = Literal["vhost-user", "memif"]

# The device ID of a slot, ``<pool>-n<numa>-<index>`` (a DNS-label pool), at most 63
# characters: what every port numanet plugs is named and tagged after. The one pattern:
# the device plugin makes and parses slot IDs with it (``deviceplugin.naming``), the VPP
# backend recognises its interfaces by it (VPP tags are 63 characters).
SLOT_ID = re.compile(
    r"^(?P<pool>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-n(?P<numa>[0-9]{1,3})-(?P<index>[0-9]{3,5})$"
)
MAX_SLOT_ID = 63


def is_slot_id(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_SLOT_ID and bool(SLOT_ID.fullmatch(value))

# Tag keys written on every port numanet creates (OVS external_ids, VPP tags).
TAG_OWNER = "numanet-owner"  # value always "numanet": marks the port as ours
TAG_DEVICE_ID = "numanet-device-id"
TAG_POD_NAMESPACE = "numanet-pod-namespace"
TAG_POD_NAME = "numanet-pod-name"
TAG_CONTAINER_ID = "numanet-container-id"
TAG_IFNAME = "numanet-ifname"
# memif only, on a PluggedPort whose vSwitch sends on a fixed set of queues (OVS: one per
# PMD thread plus one): the queue pairs the container must open, as decimal text.
TAG_MEMIF_QUEUES = "numanet-memif-queues"
# On a port prepared ahead of its CNI ADD (``VSwitch.prepare``), value "true": no pod owns
# it yet, and the plug with an owner claims it instead of creating a second one.
TAG_PREPARED = "numanet-prepared"


class VSwitchError(RuntimeError):
    """A vSwitch refused or failed a change; the message names the call, the slot and the answer."""


class VSwitchUnavailable(VSwitchError):
    """The vSwitch cannot be reached now; callers should report 'try again later'."""


@dataclass(frozen=True)
class Owner:
    """Who a port belongs to; written as tags so ownership survives agent restarts."""

    pod_namespace: str = ""
    pod_name: str = ""
    container_id: str = ""
    ifname: str = ""

    @property
    def pod(self) -> str:
        """``namespace/name`` for log lines; ``-`` while the owner is not known."""
        return f"{self.pod_namespace}/{self.pod_name}" if self.pod_name else "-"


@dataclass(frozen=True)
class PortSpec:
    """Everything a backend needs to plug one slot."""

    device_id: str
    kind: PortKind
    # Container side, as DESIGN.md "Roles" says: vhost-user "server"|"client",
    # memif "slave"|"master".
    container_role: str
    socket_path: str  # host path of the slot's socket, <run-dir>/s/<deviceID>/sock
    network: str  # OVS bridge name or VPP bridge-domain name
    owner: Owner = field(default_factory=Owner)
    mac: str | None = None
    mtu: int | None = None
    vlan: int | None = None
    memif_mode: str = "ethernet"  # ethernet | ip
    memif_id: int = 0
    ring_size: int | None = None
    buffer_size: int | None = None
    # memif mode "ip" only: the vSwitch side's address in CIDR form ("10.56.0.1/24"); the
    # interface is routed with it instead of joining the network's bridge domain (VPP).
    ip_address: str | None = None
    # The caller holds the device (the CNI's ADD: the kubelet says it is the pod's, and no
    # attachment record holds it): a port of the device that cannot serve this spec (an
    # earlier attachment's that left no record, other settings) is removed and made anew
    # instead of refused. The plug's own lookup finds it: the caller looks nothing up.
    take_over: bool = False
    # Called once by the plug when what is slow about it is only waiting (OVS: the port's
    # transaction is committed, vswitchd sets it up), or at its start when nothing is:
    # the caller starts its own work then (the CNI's IPAM ADD, an exec'd plugin), so that
    # the work overlaps the wait without competing with the plug's own CPU. A backend may
    # never call it; the caller then starts that work once the plug returns.
    on_committed: Callable[[], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PluggedPort:
    """A port numanet owns on a vSwitch, as read back from it."""

    device_id: str
    port_name: str
    kind: PortKind
    socket_path: str
    network: str
    owner: Owner
    mac: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # Set by a plug that claimed a port ``prepare`` had made (and not compared: a plug's
    # outcome, not a property of the port).
    claimed: bool = field(default=False, compare=False)

    @property
    def prepared(self) -> bool:
        """Created by ``VSwitch.prepare`` and not yet claimed by a plug with an owner."""
        return self.tags.get(TAG_PREPARED) == "true"


@dataclass(frozen=True)
class Health:
    healthy: bool
    reason: str = ""


class CpuTopology(Protocol):
    """The machine's CPU-to-NUMA-node map, handed in by the caller (``numa.Topology`` is
    one), so that vswitch reads no sysfs and depends on nothing else of numanet."""

    @property
    def node_ids(self) -> tuple[int, ...]: ...

    def nodes_of(self, cpus: Iterable[int]) -> frozenset[int]: ...


class VSwitch(abc.ABC):
    """One vSwitch instance; ``plug`` of one device ID is idempotent.

    Calls for different devices may run in parallel. Calls for one device ID come one at a
    time: the caller serialises them (the CNI holds its per-device lock, ``cni.locks``,
    around the whole verb), so a backend keeps no per-device lock of its own.
    """

    name: str  # "ovs" | "vpp"

    @abc.abstractmethod
    def connect(self, timeout: float = 5.0) -> None:
        """Open the long-lived connection; raises VSwitchUnavailable when it cannot."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def health(self) -> Health: ...

    @abc.abstractmethod
    def poll_numa_nodes(self, topology: CpuTopology) -> frozenset[int] | None:
        """NUMA nodes whose CPUs the switch polls packets on; None when it cannot tell."""

    @abc.abstractmethod
    def plug(self, spec: PortSpec) -> PluggedPort:
        """Create the port for a slot in one transaction; nothing is left behind on failure.

        A port ``prepare`` made for the device is claimed instead: it takes the spec's
        owner, and it is created again only when the spec asks for other settings."""

    def prepare(self, spec: PortSpec) -> PluggedPort | None:
        """Create the slot's port before any pod claims it, so that the plug at CNI ADD
        has nothing slow left to do (OVS-DPDK takes milliseconds to set up a port). The
        port is tagged ``TAG_PREPARED``; a device that has a port already keeps it.

        Returns the port, or None from a backend whose plug is quick enough that
        preparing gains nothing (the default)."""
        return None

    @abc.abstractmethod
    def unplug(self, device_id: str) -> bool:
        """Remove the slot's port; False when there was none (DEL is idempotent)."""

    @abc.abstractmethod
    def ports(self) -> list[PluggedPort]:
        """Every port this switch holds that carries numanet's owner tag."""

    def port(self, device_id: str) -> PluggedPort | None:
        """The port of one device, or None; a backend with a quicker lookup overrides it."""
        return next((p for p in self.ports() if p.device_id == device_id), None)
