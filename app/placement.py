"""Which NUMA node the app runs on and which of the pod's CPUs it takes.

numanet put the slots on one node so that the kubelet (static CPU manager, Topology
Manager single-numa-node) can give the pod CPUs and hugepages there too. An app that
polls an interface from another node's CPU pays for every packet crossing the
interconnect, so a mismatch is an error unless the caller accepts it (``cross_numa``).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import AppError
from app.sysfs import format_cpulist
from app.view import Interface, PodView

ALIGN_HINT = ("give the pod Guaranteed QoS with whole CPUs on a node whose kubelet runs the "
              "static CPU manager and topologyManagerPolicy single-numa-node (deploy/README.md)"
              ", or pass --cross-numa to go on anyway (slower)")


@dataclass(frozen=True)
class Placement:
    nodes: tuple[int, ...]  # NUMA nodes of the interfaces, sorted; () when unknown
    cpus: tuple[int, ...]  # the CPUs to run on, the main one first
    warnings: tuple[str, ...] = ()


def interface_nodes(interfaces: tuple[Interface, ...], cross_numa: bool) -> tuple[int, ...]:
    """The interfaces' NUMA nodes; an error when they span several (unless accepted)."""
    if not interfaces:
        raise AppError("this container has no numanet interface",
                       "name a numanet network in the pod's k8s.v1.cni.cncf.io/networks "
                       "annotation (see `numanet-app interfaces` for what was looked at)")
    nodes = tuple(sorted({i.numa_node for i in interfaces if i.numa_node is not None}))
    if len(nodes) > 1 and not cross_numa:
        where = ", ".join(f"{i.label} on node {i.numa_node}" for i in interfaces
                          if i.numa_node is not None)
        raise AppError(f"the interfaces sit on different NUMA nodes ({where})",
                       "one app should use one node's interfaces: attach networks whose "
                       "pools have slots on one node and let the Topology Manager align "
                       "them (topologyManagerPolicy single-numa-node), or pass --cross-numa")
    return nodes


def place(view: PodView, lcores: int | None = None, cross_numa: bool = False) -> Placement:
    """CPUs on the interfaces' node(s) first, in order; the rest only when asked for more."""
    nodes = interface_nodes(view.interfaces, cross_numa)
    cpus = sorted(view.cpus)
    if not cpus:
        raise AppError("this process may run on no CPU", "check the container's cpuset")
    warnings: list[str] = []
    if nodes and view.node_cpus:
        local = [c for c in cpus if view.node_of(c) in nodes]
        remote = [c for c in cpus if c not in local]
    else:  # no NUMA facts: every CPU is as good as any
        local, remote = cpus, []
    if nodes and not local:
        where = _cpu_nodes(view, cpus)
        message = (f"the container's CPUs ({where}) are not on the NUMA node of its "
                   f"interfaces ({', '.join(map(str, nodes))})")
        if not cross_numa:
            raise AppError(message, ALIGN_HINT)
        warnings.append(message)
    want = (len(local) or len(cpus)) if lcores is None else lcores
    if want < 1:
        raise AppError(f"--lcores {lcores}: DPDK needs at least one lcore (the main one)",
                       "give --lcores 1 or more")
    if want > len(cpus):
        plural = "s" if len(cpus) > 1 else ""
        raise AppError(f"--lcores {want} is more than the {len(cpus)} CPU{plural} this "
                       f"container may use ({format_cpulist(cpus)})",
                       "lower --lcores, or give the container more CPUs (resources.cpu)")
    chosen = (local + remote)[:want]
    spilled = [c for c in chosen if c in remote]
    if spilled and local:
        warnings.append(f"CPUs {format_cpulist(spilled)} are not on the interfaces' NUMA node "
                        f"{', '.join(map(str, nodes))}: only {len(local)} of this container's "
                        f"CPUs are ({format_cpulist(local)})")
    return Placement(nodes, tuple(chosen), tuple(warnings))


def _cpu_nodes(view: PodView, cpus: list[int]) -> str:
    by_node: dict[int | None, list[int]] = {}
    for cpu in cpus:
        by_node.setdefault(view.node_of(cpu), []).append(cpu)
    ordered = sorted(by_node.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
    return "; ".join(f"{format_cpulist(c)} on node {'?' if n is None else n}" for n, c in ordered)
