"""What an OVS port for a slot looks like: name, type, options, tags; and back from the tags.

Pure functions, no database: ``plan_port`` checks a ``PortSpec`` and turns it into the
columns of one Port and one Interface row; ``plugged_from_tags`` reads a ``PluggedPort``
back from the ``external_ids`` numanet wrote, so ownership survives agent restarts.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace

from vswitch.api import (
    TAG_CONTAINER_ID,
    TAG_DEVICE_ID,
    TAG_IFNAME,
    TAG_MEMIF_QUEUES,
    TAG_OWNER,
    TAG_POD_NAME,
    TAG_POD_NAMESPACE,
    TAG_PREPARED,
    Owner,
    PluggedPort,
    PortSpec,
    VSwitchError,
)

OWNER_VALUE = "numanet"
# OVS-backend tags next to the common ones of vswitch.api: enough to rebuild the spec.
TAG_KIND = "numanet-kind"
TAG_CONTAINER_ROLE = "numanet-container-role"
TAG_SOCKET_PATH = "numanet-socket-path"
TAG_MAC = "numanet-mac"
TAG_VLAN = "numanet-vlan"
TAG_MTU = "numanet-mtu"
TAG_MEMIF_ID = "numanet-memif-id"
TAG_MEMIF_MODE = "numanet-memif-mode"
TAG_RING_SIZE = "numanet-ring-size"
TAG_BUFFER_SIZE = "numanet-buffer-size"
# Derived at plug time, not part of the spec: queue pairs the container's memif must open
# (TAG_MEMIF_QUEUES, vswitch.api's key, which the CNI reads).
_DERIVED_TAGS = frozenset({TAG_MEMIF_QUEUES})
# The OVS convention (vswitch.xml, "Integration with hypervisors") for the guest-side MAC.
ATTACHED_MAC = "attached-mac"

OWNER_TAGS = (TAG_POD_NAMESPACE, TAG_POD_NAME, TAG_CONTAINER_ID, TAG_IFNAME)
# What a claim of a prepared port changes in place: who holds it and the guest MAC, which
# only numanet and the container read, and the VLAN and MTU, which ovs-vswitchd applies to
# the port it has (about 5 ms, against 15 for a new DPDK port); anything else means
# another port.
_CLAIM_TAGS = frozenset({*OWNER_TAGS, TAG_MAC, TAG_PREPARED})
_SETTING_TAGS = frozenset({TAG_VLAN, TAG_MTU})

# Interface types.
VHOST_CLIENT = "dpdkvhostuserclient"  # OVS connects to the socket the container serves
VHOST_SERVER = "dpdkvhostuser"  # OVS serves the socket in its vhost-sock-dir
DPDK = "dpdk"  # memif through DPDK's net_memif PMD

PORT_PREFIX = "nn"
# 15 = IFNAMSIZ - 1: the bridge's tap and every tool that treats a port name as a
# netdev name accept it; the name is also the dpdkvhostuser socket's file name.
PORT_NAME_LEN = 15
_SUN_PATH_MAX = 107
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_ID_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
# A devargs value ends at ',' and OVS quotes options with '"': neither may appear in a path.
_DEVARGS_UNSAFE = re.compile(r"[,\"'=\s\\]")
MTU_MIN, MTU_MAX = 68, 9710  # OVS netdev-dpdk refuses larger frames (NETDEV_DPDK_MAX_PKT_LEN)
MEMIF_MAX_LOG2_RING = 14


def port_name(device_id: str) -> str:
    """``nn`` + 13 hex digits of SHA-256(device ID): deterministic, short, no path characters."""
    digest = hashlib.sha256(device_id.encode()).hexdigest()
    return PORT_PREFIX + digest[: PORT_NAME_LEN - len(PORT_PREFIX)]


@dataclass(frozen=True)
class PortPlan:
    """The rows one plug writes."""

    device_id: str
    name: str
    bridge: str
    iface_type: str
    options: dict[str, str]
    port_external_ids: dict[str, str]
    iface_external_ids: dict[str, str]
    tag: int | None = None
    mtu_request: int | None = None
    # dpdkvhostuser: OVS creates the socket in its own directory; numanet links it here.
    link_socket_to: str | None = None
    # A socket OVS (DPDK) itself creates at the slot path and must remove again.
    vswitch_serves_socket: bool = False


def _bad(spec_device_id: str, what: str) -> VSwitchError:
    return VSwitchError(f"cannot plug device_id={spec_device_id} on OVS: {what}")


def _check_common(spec: PortSpec, default_bridge: str) -> str:
    if not isinstance(spec.device_id, str) or not _ID_SAFE.fullmatch(spec.device_id):
        raise VSwitchError(
            f"device ID {spec.device_id!r} is not usable: letters, digits, '.', ':', '-' only"
        )
    if len(spec.device_id) > 63:
        raise _bad(spec.device_id, "device ID is longer than 63 characters")
    bridge = spec.network or default_bridge
    if not _ID_SAFE.fullmatch(bridge) or len(bridge) > PORT_NAME_LEN:
        raise _bad(
            spec.device_id,
            f"bridge name {bridge!r} must be 1-{PORT_NAME_LEN} letters, digits, '.', ':' or '-'",
        )
    path = spec.socket_path
    if not isinstance(path, str) or not os.path.isabs(path):
        raise _bad(spec.device_id, f"socket path {path!r} must be absolute")
    if len(path.encode()) > _SUN_PATH_MAX:
        raise _bad(
            spec.device_id,
            f"socket path {path!r} is longer than the {_SUN_PATH_MAX}-byte unix socket limit",
        )
    if not os.path.isdir(os.path.dirname(path)):
        raise _bad(
            spec.device_id,
            f"slot directory {os.path.dirname(path)} does not exist: create the slot first",
        )
    if spec.vlan is not None and not (
        isinstance(spec.vlan, int) and not isinstance(spec.vlan, bool) and 1 <= spec.vlan <= 4094
    ):
        raise _bad(spec.device_id, f"VLAN {spec.vlan!r} is not a VLAN ID (1-4094)")
    if spec.mtu is not None and not (
        isinstance(spec.mtu, int)
        and not isinstance(spec.mtu, bool)
        and MTU_MIN <= spec.mtu <= MTU_MAX
    ):
        raise _bad(spec.device_id, f"MTU {spec.mtu!r} is outside {MTU_MIN}-{MTU_MAX}")
    if spec.mac is not None and not (
        isinstance(spec.mac, str) and _MAC.fullmatch(spec.mac.lower())
    ):
        raise _bad(spec.device_id, f"MAC {spec.mac!r} is not of the form 02:00:00:00:00:01")
    if spec.ip_address:
        raise _bad(
            spec.device_id,
            "ip_address applies to memif mode ip, which OVS does not offer: use a VPP pool",
        )
    if spec.mac is not None and int(spec.mac[:2], 16) & 1:
        raise _bad(spec.device_id, f"MAC {spec.mac} is a multicast address; use a unicast one")
    return bridge


def _tags(spec: PortSpec, bridge: str, prepared: bool) -> dict[str, str]:
    owner = spec.owner
    tags = {
        TAG_OWNER: OWNER_VALUE,
        TAG_DEVICE_ID: spec.device_id,
        TAG_POD_NAMESPACE: owner.pod_namespace,
        TAG_POD_NAME: owner.pod_name,
        TAG_CONTAINER_ID: owner.container_id,
        TAG_IFNAME: owner.ifname,
        TAG_KIND: spec.kind,
        TAG_CONTAINER_ROLE: spec.container_role,
        TAG_SOCKET_PATH: spec.socket_path,
    }
    optional = {
        TAG_MAC: spec.mac.lower() if spec.mac else None,
        TAG_VLAN: spec.vlan,
        TAG_MTU: spec.mtu,
        TAG_RING_SIZE: spec.ring_size,
        TAG_BUFFER_SIZE: spec.buffer_size,
        TAG_PREPARED: "true" if prepared else None,
    }
    if spec.kind == "memif":
        optional[TAG_MEMIF_ID] = spec.memif_id
        optional[TAG_MEMIF_MODE] = spec.memif_mode
    tags.update({key: str(value) for key, value in optional.items() if value is not None})
    return tags


def _memif_devargs(spec: PortSpec, name: str) -> tuple[str, bool]:
    """DPDK net_memif devargs for the vSwitch side; True when OVS serves the socket."""
    role = spec.container_role
    if role in ("slave", "client"):
        vswitch_role = "server"  # DESIGN.md: the container is slave, the vSwitch master
    elif role in ("master", "server"):
        vswitch_role = "client"
        # DPDK's memif client connects once, when the port starts, and never retries.
        if not os.path.exists(spec.socket_path):
            raise _bad(
                spec.device_id,
                f"memif role {role} needs the container's socket {spec.socket_path} to exist "
                "when OVS plugs the port (DPDK's memif client does not retry): use role slave "
                "for memif pools on OVS (OVS is then the master and creates the socket)",
            )
    else:
        raise _bad(spec.device_id, f"memif role {role!r} is not one of slave, master")
    if spec.memif_mode != "ethernet":
        raise _bad(
            spec.device_id,
            f"memif mode {spec.memif_mode!r} is not supported by OVS (DPDK's net_memif is "
            "ethernet only): use memifMode ethernet or a VPP pool",
        )
    if not isinstance(spec.memif_id, int) or not 0 <= spec.memif_id <= 0xFFFFFFFF:
        raise _bad(spec.device_id, f"memif id {spec.memif_id!r} is not a 32-bit unsigned number")
    if _DEVARGS_UNSAFE.search(spec.socket_path):
        raise _bad(
            spec.device_id,
            f"socket path {spec.socket_path!r} contains a character DPDK devargs cannot carry "
            "(comma, quote, '=', backslash or space)",
        )
    # The vdev name must start with the driver name and be unique in vswitchd.
    parts = [f"net_memif_{name}", f"role={vswitch_role}", f"id={spec.memif_id}"]
    if spec.ring_size is not None:
        size = spec.ring_size
        if (
            not isinstance(size, int)
            or size < 2
            or size & (size - 1)
            or size.bit_length() - 1 > (MEMIF_MAX_LOG2_RING)
        ):
            raise _bad(
                spec.device_id,
                f"memif ring size {size!r} must be a power of two 2-{1 << MEMIF_MAX_LOG2_RING}",
            )
        parts.append(f"rsize={size.bit_length() - 1}")
    if spec.buffer_size is not None:
        if not isinstance(spec.buffer_size, int) or not 128 <= spec.buffer_size <= 65535:
            raise _bad(spec.device_id, f"memif buffer size {spec.buffer_size!r} is not 128-65535")
        parts.append(f"bsize={spec.buffer_size}")
    parts += [f"socket={spec.socket_path}", "socket-abstract=no"]
    return ",".join(parts), vswitch_role == "server"


def plan_port(spec: PortSpec, default_bridge: str, *, prepared: bool = False) -> PortPlan:
    """Check a spec and turn it into rows; raises VSwitchError naming what is wrong.
    ``prepared``: the port is made ahead of its pod (``VSwitch.prepare``) and tagged so."""
    bridge = _check_common(spec, default_bridge)
    name = port_name(spec.device_id)
    tags = _tags(spec, bridge, prepared)
    options: dict[str, str] = {}
    link_to: str | None = None
    serves = False
    if spec.kind == "vhost-user":
        if spec.ring_size is not None or spec.buffer_size is not None:
            raise _bad(
                spec.device_id,
                "ring/buffer size apply to memif only (vhost-user queues are sized by the guest)",
            )
        if spec.container_role == "server":
            iface_type = VHOST_CLIENT
            options["vhost-server-path"] = spec.socket_path
        elif spec.container_role == "client":
            iface_type = VHOST_SERVER
            link_to = spec.socket_path
        else:
            raise _bad(
                spec.device_id,
                f"vhost-user mode {spec.container_role!r} is not one of server, client",
            )
    elif spec.kind == "memif":
        iface_type = DPDK
        options["dpdk-devargs"], serves = _memif_devargs(spec, name)
    else:
        raise _bad(spec.device_id, f"port kind {spec.kind!r} is not one of vhost-user, memif")
    iface_ids = dict(tags)
    if spec.mac:
        iface_ids[ATTACHED_MAC] = spec.mac.lower()
    return PortPlan(
        device_id=spec.device_id,
        name=name,
        bridge=bridge,
        iface_type=iface_type,
        options=options,
        port_external_ids=tags,
        iface_external_ids=iface_ids,
        tag=spec.vlan,
        mtu_request=spec.mtu,
        link_socket_to=link_to,
        vswitch_serves_socket=serves,
    )


def pmd_cpus(pmd_cpu_mask: str) -> frozenset[int]:
    """The CPUs of ``other_config:pmd-cpu-mask`` (hex, ``0x`` optional, as OVS reads it);
    ValueError when it is not one."""
    try:
        value = int(pmd_cpu_mask.strip(), 16)
    except ValueError:
        raise ValueError(f"pmd-cpu-mask {pmd_cpu_mask!r} is not a hex CPU mask") from None
    if value < 0:
        raise ValueError(f"pmd-cpu-mask {pmd_cpu_mask!r} is negative")
    return frozenset(i for i in range(value.bit_length()) if value >> i & 1)


def memif_queue_pairs(pmd_cpu_mask: str | None) -> int:
    """Queue pairs a container must open on a memif port OVS serves.

    ovs-vswitchd sends on the transmit queue of the sending thread: 0 for its main thread,
    1..N for its N PMD threads. A memif connection only has the rings the container (the
    slave) asks for, so with one ring pair everything the PMD sends is dropped. N comes
    from pmd-cpu-mask; without one OVS runs a PMD per NUMA node with ports, assumed one.
    """
    pmds = 1
    if pmd_cpu_mask:
        try:
            pmds = max(1, len(pmd_cpus(pmd_cpu_mask)))
        except ValueError:
            pmds = 1
    return pmds + 1


def with_memif_queues(plan: PortPlan, pairs: int) -> PortPlan:
    """The plan with OVS's receive queues matched to the ``pairs`` the container opens."""
    tags = {TAG_MEMIF_QUEUES: str(pairs)}
    return replace(
        plan,
        options={**plan.options, "n_rxq": str(pairs)},
        port_external_ids={**plan.port_external_ids, **tags},
        iface_external_ids={**plan.iface_external_ids, **tags},
    )


def is_ours(external_ids: dict[str, str]) -> bool:
    return external_ids.get(TAG_OWNER) == OWNER_VALUE and bool(external_ids.get(TAG_DEVICE_ID))


def plugged_from_tags(port: str, bridge: str, external_ids: dict[str, str]) -> PluggedPort:
    owner = Owner(
        pod_namespace=external_ids.get(TAG_POD_NAMESPACE, ""),
        pod_name=external_ids.get(TAG_POD_NAME, ""),
        container_id=external_ids.get(TAG_CONTAINER_ID, ""),
        ifname=external_ids.get(TAG_IFNAME, ""),
    )
    kind = external_ids.get(TAG_KIND, "vhost-user")
    return PluggedPort(
        device_id=external_ids[TAG_DEVICE_ID],
        port_name=port,
        kind="memif" if kind == "memif" else "vhost-user",
        socket_path=external_ids.get(TAG_SOCKET_PATH, ""),
        network=bridge,
        owner=owner,
        mac=external_ids.get(TAG_MAC),
        tags={k: v for k, v in external_ids.items() if k.startswith("numanet-")},
    )


def spec_differences(plan: PortPlan, existing: dict[str, str]) -> list[str]:
    """Tags where an existing port differs from the plan (``key: have -> want``)."""
    keys = sorted(
        (
            {k for k in plan.port_external_ids if k.startswith("numanet-")}
            | {k for k in existing if k.startswith("numanet-")}
        )
        - _DERIVED_TAGS
    )
    return [
        f"{key}: {existing.get(key, '')!r} -> {plan.port_external_ids.get(key, '')!r}"
        for key in keys
        if existing.get(key, "") != plan.port_external_ids.get(key, "")
    ]


def claim_differences(plan: PortPlan, existing: dict[str, str]) -> tuple[list[str], list[str]]:
    """How a prepared port differs from the plan of the plug claiming it: (the VLAN/MTU
    changes the claim applies in place, the differences that need the port made anew).
    Owner and MAC differ by design and are not listed."""
    settings: list[str] = []
    others: list[str] = []
    for difference in spec_differences(plan, existing):
        key = difference.partition(":")[0]
        if key in _SETTING_TAGS:
            settings.append(difference)
        elif key not in _CLAIM_TAGS:
            others.append(difference)
    return settings, others
