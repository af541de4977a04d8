"""CNI results: parsed from IPAM plugins and prevResult, rendered in the caller's version.

Versions differ in small ways: before 1.0.0 each IP carries ``"version": "4"|"6"``;
1.1.0 adds ``socketPath``, ``pciID`` and ``mtu`` to interfaces and extra route
attributes. Records here are version-free; ``render_result`` writes the right shape.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from cni import errors
from cni.errors import CniError
from cni.netconf import version_tuple

_ROUTE_EXTRAS_110 = ("mtu", "advmss", "priority", "table", "scope")


@dataclass(frozen=True)
class IpConfig:
    address: str  # CIDR, e.g. 10.1.0.5/24
    gateway: str | None = None

    @property
    def family(self) -> str:
        return str(ipaddress.ip_interface(self.address).version)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"address": self.address}
        if self.gateway:
            out["gateway"] = self.gateway
        return out


@dataclass(frozen=True)
class Route:
    dst: str
    gw: str | None = None
    extras: tuple[tuple[str, Any], ...] = ()  # 1.1.0 attributes, kept as given

    def to_json(self, version: str = "1.1.0") -> dict[str, Any]:
        out: dict[str, Any] = {"dst": self.dst}
        if self.gw:
            out["gw"] = self.gw
        if version_tuple(version) >= (1, 1, 0):
            out.update(self.extras)
        return out


@dataclass(frozen=True)
class Dns:
    nameservers: tuple[str, ...] = ()
    domain: str | None = None
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out


@dataclass(frozen=True)
class IpamResult:
    ips: tuple[IpConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: Dns = Dns()


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str | None = None
    sandbox: str | None = None
    socket_path: str | None = None  # 1.1.0
    pci_id: str | None = None  # 1.1.0
    mtu: int | None = None  # 1.1.0

    def to_json(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.sandbox:
            out["sandbox"] = self.sandbox
        if version_tuple(version) >= (1, 1, 0):
            if self.mtu:
                out["mtu"] = self.mtu
            if self.socket_path:
                out["socketPath"] = self.socket_path
            if self.pci_id:
                out["pciID"] = self.pci_id
        return out


def _fail(source: str, what: str) -> CniError:
    return CniError(errors.IPAM_FAILURE if source.startswith("IPAM") else errors.DECODE_FAILURE,
                    f"{source}: {what}", "the result must follow the CNI spec's Result shape")


def _str_list(value: Any, source: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, f"{key} is not a list of strings")
    return tuple(value)


def parse_dns(doc: Any, source: str) -> Dns:
    if doc is None:
        return Dns()
    if not isinstance(doc, dict):
        raise _fail(source, "dns is not an object")
    domain = doc.get("domain")
    if domain is not None and not isinstance(domain, str):
        raise _fail(source, "dns.domain is not a string")
    return Dns(_str_list(doc.get("nameservers"), source, "dns.nameservers"), domain or None,
               _str_list(doc.get("search"), source, "dns.search"),
               _str_list(doc.get("options"), source, "dns.options"))


def parse_result(doc: Any, source: str) -> tuple[tuple[Interface, ...], IpamResult]:
    """Interfaces and IP configuration of any supported result version."""
    if not isinstance(doc, dict):
        raise _fail(source, "result is not a JSON object")
    ips = []
    for item in doc.get("ips") or []:
        if not isinstance(item, dict) or not isinstance(item.get("address"), str):
            raise _fail(source, f"ips entry {item!r:.80} has no address")
        try:
            address = str(ipaddress.ip_interface(item["address"]))
            gateway = item.get("gateway")
            gateway = str(ipaddress.ip_address(gateway)) if gateway else None
        except ValueError as exc:
            raise _fail(source, f"ips entry {item!r:.80}: {exc}") from None
        ips.append(IpConfig(address, gateway))
    routes = []
    for item in doc.get("routes") or []:
        if not isinstance(item, dict) or not isinstance(item.get("dst"), str):
            raise _fail(source, f"routes entry {item!r:.80} has no dst")
        try:
            dst = str(ipaddress.ip_network(item["dst"], strict=False))
            gw = str(ipaddress.ip_address(item["gw"])) if item.get("gw") else None
        except ValueError as exc:
            raise _fail(source, f"routes entry {item!r:.80}: {exc}") from None
        extras = tuple((k, item[k]) for k in _ROUTE_EXTRAS_110 if k in item)
        routes.append(Route(dst, gw, extras))
    interfaces = []
    for item in doc.get("interfaces") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _fail(source, f"interfaces entry {item!r:.80} has no name")
        interfaces.append(Interface(item["name"], item.get("mac"), item.get("sandbox"),
                                    item.get("socketPath"), item.get("pciID"), item.get("mtu")))
    return tuple(interfaces), IpamResult(tuple(ips), tuple(routes),
                                         parse_dns(doc.get("dns"), source))


def render_result(version: str, interfaces: tuple[Interface, ...],
                  ipam: IpamResult) -> dict[str, Any]:
    """A result document in the shape of ``version``; IPs point at the first interface."""
    old = version_tuple(version) < (1, 0, 0)
    ips = []
    for ip in ipam.ips:
        entry = ip.to_json()
        if old:
            entry = {"version": ip.family, **entry}
        if interfaces:
            entry["interface"] = 0
        ips.append(entry)
    out: dict[str, Any] = {"cniVersion": version}
    if interfaces:
        out["interfaces"] = [i.to_json(version) for i in interfaces]
    out["ips"] = ips
    if ipam.routes:
        out["routes"] = [r.to_json(version) for r in ipam.routes]
    out["dns"] = ipam.dns.to_json()
    return out
