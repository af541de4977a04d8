"""A VPP inside the pod: the startup.conf fragment and the CLI lines for its interfaces.

memif: a socket of its own per slot (``create memif socket id <n> filename <sock>``) and an
interface ``memif<n>/<id>`` in the container's role. vhost-user: VPP's native vhost-user
interface, ``VirtualEthernet0/0/<k>`` in creation order (server when the container is).
NICs: a ``dpdk { dev <pci> { name <ifname> } }`` entry, so the CLI names them as the pod
does. Addresses and routes come from numanet.json (or network-status); ``cpu`` from the
same CPU choice as the DPDK arguments. Without NICs the DPDK plugin is disabled: it
would want hugepages and PCI devices the pod does not need for sockets.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from app.errors import AppError
from app.placement import place
from app.sysfs import format_cpulist
from app.view import Interface, PodView


@dataclass(frozen=True)
class VppConfig:
    startup: str  # startup.conf sections, to merge into the pod's startup.conf
    cli: tuple[str, ...]  # commands, for `unix { exec FILE }` or vppctl
    warnings: tuple[str, ...] = ()


def vpp_config(view: PodView, lcores: int | None = None, cross_numa: bool = False,
               exec_file: str | None = None) -> VppConfig:
    placement = place(view, lcores, cross_numa)
    warnings = list(placement.warnings)
    cli: list[str] = []
    nics: list[tuple[str, str]] = []
    vhost = 0
    memif_socket = 0
    for iface in view.interfaces:
        if iface.kind == "memif":
            memif_socket += 1
            name = f"memif{memif_socket}/{iface.memif_id or 0}"
            cli += _memif(iface, memif_socket)
        elif iface.kind == "vhost-user":
            name = f"VirtualEthernet0/0/{vhost}"
            vhost += 1
            cli.append(_vhost(iface))
        else:
            name = iface.ifname or f"numanet{len(nics)}"
            nics.append((str(iface.pci_address), name))
            if iface.mac:
                cli.append(f"set interface mac address {name} {iface.mac}")
        if iface.mtu:
            cli.append(f"set interface mtu packet {iface.mtu} {name}")
        cli.append(f"set interface state {name} up")
        cli += _addresses(iface, name, warnings)
    return VppConfig(_startup(placement.cpus, nics, exec_file), tuple(cli), tuple(warnings))


def _memif(iface: Interface, socket_id: int) -> list[str]:
    role = {"slave": "slave", "master": "master"}.get(iface.role or "")
    if role is None or not iface.socket:
        raise AppError(f"{iface.label}: memif without a known role and socket",
                       "its numanet.json must name both; recreate the pod")
    line = f"create interface memif id {iface.memif_id or 0} socket-id {socket_id} {role}"
    if iface.memif_mode == "ip":
        line += " mode ip"
    if iface.queues:
        line += f" rx-queues {iface.queues} tx-queues {iface.queues}"
    if iface.ring_size:
        line += f" ring-size {iface.ring_size}"
    if iface.buffer_size:
        line += f" buffer-size {iface.buffer_size}"
    if iface.mac and iface.memif_mode != "ip":
        line += f" hw-addr {iface.mac}"
    return [f"create memif socket id {socket_id} filename {iface.socket}", line]


def _vhost(iface: Interface) -> str:
    if iface.role not in ("server", "client") or not iface.socket:
        raise AppError(f"{iface.label}: vhost-user without a known mode and socket",
                       "its numanet.json must name both; recreate the pod")
    line = f"create vhost-user socket {iface.socket}"
    if iface.role == "server":
        line += " server"
    if iface.mac:
        line += f" hwaddr {iface.mac}"
    return line


def _addresses(iface: Interface, name: str, warnings: list[str]) -> list[str]:
    lines: list[str] = []
    own = [iface.address] if iface.memif_mode == "ip" and iface.address else \
        [ip.address for ip in iface.ips]
    for address in own:
        if "/" not in address:
            # network-status gives addresses without their prefix length.
            prefix = ipaddress.ip_address(address).max_prefixlen
            warnings.append(f"{iface.label}: {address} comes without its prefix length "
                            f"(network-status): /{prefix} is assumed; add the route to its "
                            "subnet yourself")
            address = f"{address}/{prefix}"
        lines.append(f"set interface ip address {name} {address}")
    gateways = [ip.gateway for ip in iface.ips if ip.gateway] + ([iface.peer] if iface.peer else [])
    for route in iface.routes:
        family = ipaddress.ip_network(route.dst, strict=False).version
        via = route.gw or next((g for g in gateways
                                if ipaddress.ip_address(g).version == family), None)
        lines.append(f"ip route add {route.dst} via {via} {name}" if via
                     else f"ip route add {route.dst} via {name}")
    return lines


def _startup(cpus: tuple[int, ...], nics: list[tuple[str, str]], exec_file: str | None) -> str:
    out: list[str] = []
    if exec_file:
        out += ["unix {", f"  exec {exec_file}", "}"]
    out += ["cpu {", f"  main-core {cpus[0]}"]
    if len(cpus) > 1:
        out.append(f"  corelist-workers {format_cpulist(cpus[1:])}")
    out.append("}")
    if nics:
        out.append("dpdk {")
        out += [f"  dev {pci} {{ name {name} }}" for pci, name in nics]
        out.append("}")
    else:
        out += ["plugins {", "  plugin dpdk_plugin.so { disable }", "}"]
    return "\n".join(out) + "\n"
