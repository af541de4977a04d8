"""``numanet-app interfaces``: the view as text for people, as JSON for scripts."""

from __future__ import annotations

import json

from app.roots import Roots
from app.sysfs import format_cpulist
from app.view import Interface, PodView

_ROLE_WORDS = {"vhost-user": "mode", "memif": "role"}


def as_json(view: PodView) -> str:
    return json.dumps({"interfaces": [i.to_json() for i in view.interfaces],
                       "cpus": format_cpulist(view.cpus)}, indent=2)


def as_text(view: PodView, roots: Roots) -> str:
    if not view.interfaces:
        return (f"no numanet interfaces (looked at {roots.slots}/<pool>/<device>/numanet.json, "
                f"{roots.podnetinfo}/annotations and the NUMANET_* environment)\n")
    blocks = [_block(i) for i in view.interfaces]
    return "\n".join(blocks)


def _block(iface: Interface) -> str:
    head = f"{iface.ifname or '-'}"
    if iface.network:
        head += f" ({iface.network})"
    kind = iface.kind
    if iface.role:
        kind += f", {_ROLE_WORDS.get(iface.kind, 'role')} {iface.role}"
    if iface.memif_mode:
        kind += f", {iface.memif_mode}"
    node = "?" if iface.numa_node is None else str(iface.numa_node)
    lines = [f"{head}: {kind}, NUMA node {node}"]
    rows = [
        ("socket", iface.socket),
        ("pci", iface.pci_address),
        ("device", f"{iface.device_id}" + (f" (pool {iface.pool})" if iface.pool else "")
         if iface.device_id else None),
        ("mac", iface.mac),
        ("mtu", iface.mtu),
        ("ips", ", ".join(ip.address + (f" gw {ip.gateway}" if ip.gateway else "")
                          for ip in iface.ips) or None),
        ("address", f"{iface.address} peer {iface.peer}" if iface.address else None),
        ("routes", ", ".join(r.dst + (f" via {r.gw}" if r.gw else "") for r in iface.routes)
         or None),
        ("queues", iface.queues),
        ("rings", " ".join(f"{k} {v}" for k, v in (("size", iface.ring_size),
                                                   ("buffer", iface.buffer_size)) if v)
         or None),
        ("from", ", ".join(iface.sources)),
    ]
    lines += [f"  {name:<8}{value}" for name, value in rows if value is not None]
    return "\n".join(lines) + "\n"
