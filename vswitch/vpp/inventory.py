"""What VPP holds, read back from its dumps: interfaces, memifs, vhost-users, bridge domains.

VPP is the source of truth for what numanet owns: an interface is ours when its tag is a
slot's device ID, a bridge domain when its tag starts with ``numanet:`` (see tags.py).
Nothing about ownership is kept only in memory, so an agent restart can rebuild its view from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vswitch.vpp.connection import VppConnection
from vswitch.vpp.tags import BD_TAG_PREFIX, is_slot_id

ADMIN_UP = 1  # if_status_flags IF_STATUS_API_FLAG_ADMIN_UP
MEMIF_ROLE_MASTER = 0
MEMIF_ROLE_SLAVE = 1
MEMIF_MODE_ETHERNET = 0
MEMIF_MODE_IP = 1


@dataclass(frozen=True)
class Interface:
    sw_if_index: int
    name: str
    tag: str
    mac: str
    admin_up: bool


@dataclass(frozen=True)
class Memif:
    sw_if_index: int
    socket_id: int
    memif_id: int
    role: int  # MEMIF_ROLE_*: VPP's side
    mode: int  # MEMIF_MODE_*
    ring_size: int
    buffer_size: int


@dataclass(frozen=True)
class Vhost:
    sw_if_index: int
    sock_filename: str
    is_server: bool  # VPP's side


@dataclass(frozen=True)
class BridgeDomain:
    bd_id: int
    tag: str
    members: frozenset[int]

    @property
    def network(self) -> str | None:
        """The numanet network this BD carries, or None when numanet did not create it."""
        if self.tag.startswith(BD_TAG_PREFIX):
            return self.tag[len(BD_TAG_PREFIX) :]
        return None


class Snapshot:
    """VPP's tables, each dumped the first time it is needed, then kept current.

    A plug reads only what it needs (a vhost-user plug never dumps memifs); a replay
    shares one snapshot across all its slots and records each port it creates, so it
    reads VPP once instead of once per slot. After a failed change ``invalidate()``
    drops everything, and the next read goes back to VPP.
    """

    def __init__(self, conn: VppConnection, slot: str | None = None) -> None:
        self._conn = conn
        self._slot = slot  # only names the caller in errors
        self.invalidate()

    def invalidate(self) -> None:
        self._interfaces: dict[int, Interface] | None = None
        self._memifs: dict[int, Memif] | None = None
        self._memif_sockets: dict[int, str] | None = None
        self._vhosts: dict[int, Vhost] | None = None
        self._bridge_domains: dict[int, BridgeDomain] | None = None

    # -- the tables --------------------------------------------------------------------------

    @property
    def interfaces(self) -> dict[int, Interface]:
        if self._interfaces is None:
            self._interfaces = {
                i.sw_if_index: i
                for i in map(_interface, self._conn.dump("sw_interface_dump", self._slot))
            }
        return self._interfaces

    @property
    def memifs(self) -> dict[int, Memif]:
        if self._memifs is None:
            details = self._plugin_dump("memif_dump")
            self._memifs = {m.sw_if_index: m for m in map(_memif, details)}
        return self._memifs

    @property
    def memif_sockets(self) -> dict[int, str]:
        if self._memif_sockets is None:
            details = self._plugin_dump("memif_socket_filename_dump")
            self._memif_sockets = {int(d.socket_id): str(d.socket_filename) for d in details}
        return self._memif_sockets

    @property
    def vhosts(self) -> dict[int, Vhost]:
        if self._vhosts is None:
            details = self._plugin_dump("sw_interface_vhost_user_dump")
            self._vhosts = {v.sw_if_index: v for v in map(_vhost, details)}
        return self._vhosts

    @property
    def bridge_domains(self) -> dict[int, BridgeDomain]:
        if self._bridge_domains is None:
            details = self._conn.dump("bridge_domain_dump", self._slot)
            self._bridge_domains = {b.bd_id: b for b in map(_bridge_domain, details)}
        return self._bridge_domains

    def _plugin_dump(self, name: str) -> list[Any]:
        """A plugin's table; empty when VPP runs without that plugin (it holds none then)."""
        return self._conn.dump(name, self._slot) if self._conn.offers(name) else []

    # -- questions ---------------------------------------------------------------------------

    def find(self, device_id: str) -> Interface | None:
        """The memif or vhost-user interface tagged with ``device_id``."""
        for iface in self.interfaces.values():
            if iface.tag == device_id and self._is_slot_port(iface.sw_if_index):
                return iface
        return None

    def owned(self) -> dict[str, Interface]:
        """device ID -> interface, for every memif/vhost-user interface tagged with one."""
        return {
            iface.tag: iface
            for iface in self.interfaces.values()
            if is_slot_id(iface.tag) and self._is_slot_port(iface.sw_if_index)
        }

    def bridge_domain_of(self, sw_if_index: int) -> BridgeDomain | None:
        for bd in self.bridge_domains.values():
            if sw_if_index in bd.members:
                return bd
        return None

    def bridge_domain_for(self, network: str) -> BridgeDomain | None:
        for bd in self.bridge_domains.values():
            if bd.network == network:
                return bd
        return None

    def port_of(self, sw_if_index: int) -> Memif | Vhost | None:
        """The memif or vhost-user behind an interface; reads a table only when needed."""
        for loaded in (self._memifs, self._vhosts):
            if loaded is not None and sw_if_index in loaded:
                return loaded[sw_if_index]
        return self.memifs.get(sw_if_index) or self.vhosts.get(sw_if_index)

    def socket_path_of(self, sw_if_index: int) -> str:
        port = self.port_of(sw_if_index)
        if isinstance(port, Memif):
            return self.memif_sockets.get(port.socket_id, "")
        return port.sock_filename if port is not None else ""

    def _is_slot_port(self, sw_if_index: int) -> bool:
        return self.port_of(sw_if_index) is not None

    # -- what numanet just did -----------------------------------------------------------------

    def add_bridge_domain(self, bd: BridgeDomain) -> None:
        self.bridge_domains[bd.bd_id] = bd

    def add_socket(self, socket_id: int, filename: str) -> None:
        self.memif_sockets[socket_id] = filename

    def drop_socket(self, socket_id: int) -> None:
        self.memif_sockets.pop(socket_id, None)

    def add_port(self, iface: Interface, port: Memif | Vhost, bd_id: int | None) -> None:
        self.interfaces[iface.sw_if_index] = iface
        if isinstance(port, Memif):
            self.memifs[iface.sw_if_index] = port
        else:
            self.vhosts[iface.sw_if_index] = port
        if bd_id is not None:
            bd = self.bridge_domains[bd_id]
            self.bridge_domains[bd_id] = BridgeDomain(
                bd.bd_id, bd.tag, bd.members | {iface.sw_if_index}
            )


def read_interface(
    conn: VppConnection, sw_if_index: int, slot: str | None = None
) -> Interface | None:
    """One interface, by index (sw_interface_dump filtered in VPP)."""
    for details in conn.dump("sw_interface_dump", slot, sw_if_index=sw_if_index):
        if int(details.sw_if_index) == sw_if_index:
            return _interface(details)
    return None


def _interface(d: Any) -> Interface:
    return Interface(
        sw_if_index=int(d.sw_if_index),
        name=str(d.interface_name),
        tag=str(d.tag),
        mac=str(d.l2_address),
        admin_up=bool(int(d.flags) & ADMIN_UP),
    )


def _memif(d: Any) -> Memif:
    return Memif(
        sw_if_index=int(d.sw_if_index),
        socket_id=int(d.socket_id),
        memif_id=int(d.id),
        role=int(d.role),
        mode=int(d.mode),
        ring_size=int(d.ring_size),
        buffer_size=int(d.buffer_size),
    )


def _vhost(d: Any) -> Vhost:
    return Vhost(
        sw_if_index=int(d.sw_if_index),
        sock_filename=str(d.sock_filename),
        is_server=bool(d.is_server),
    )


def _bridge_domain(d: Any) -> BridgeDomain:
    return BridgeDomain(
        bd_id=int(d.bd_id),
        tag=str(d.bd_tag),
        members=frozenset(int(m.sw_if_index) for m in d.sw_if_details),
    )
