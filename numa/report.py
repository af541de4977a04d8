"""``numanet topology [--sysfs DIR] [--json]``: the node as numanet sees it.

The table is grouped by NUMA node (CPUs, memory, hugepages by size free/total, the
network PCI functions on it with driver and DPDK readiness); NICs whose node the
firmware did not give come last under "unknown NUMA node". Warnings about odd sysfs
entries go to stderr as ``warning: ...`` lines; the exit status is 0 even then, 1 only
when the sysfs root cannot be read at all.

``--json`` prints the same data, with these stable keys::

    {
      "sysfs": "/sys",
      "nodes": [{
        "id": 0,
        "cpus": [0, 1, 2, 3],                # sorted
        "cpulist": "0-3",
        "memory_total_kb": 8388608,          # null when the kernel did not say
        "memory_free_kb": 6291456,
        "hugepages": [{"page_size_kb": 2048, "page_size": "2Mi", "total": 512, "free": 256}],
        "nics": ["0000:01:00.0"]             # addresses of the NICs on this node
      }],
      "nics": [{
        "address": "0000:01:01.0", "numa_node": 0,   # null: unknown (sysfs -1)
        "driver": "vfio-pci", "vendor": "8086", "device": "1889", "class": "020000",
        "netdev": null, "iommu_group": "11", "vfio_device": "/dev/vfio/11",
        "physfn": "0000:01:00.0", "vfs": [], "pf_name": "enp1s0f0", "sriov_totalvfs": 0,
        "dpdk_ready": true,
        "state": "dpdk"                      # dpdk | kernel | unbound | no-iommu-group
      }],
      "warnings": ["<path>: <problem>"]      # also printed on stderr
    }
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from numa.cpus import format_cpulist
from numa.discover import discover
from numa.model import NumaNode, PciNic, Topology
from numa.pagesize import format_page_size

_STATE_TEXT = {
    "dpdk": "yes",
    "kernel": "no: kernel driver",
    "unbound": "no: no driver",
    "no-iommu-group": "no: vfio-pci without IOMMU group",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sysfs", default="/sys", metavar="DIR",
                        help="sysfs root to read (default: /sys)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    try:
        topology = discover(args.sysfs)
    except OSError as exc:
        print(f"numanet topology: error: {exc}", file=sys.stderr)
        return 1
    for warning in topology.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(topology_to_dict(topology, args.sysfs), indent=2))
    else:
        print(format_table(topology))
    return 0


def topology_to_dict(topology: Topology, sysfs: str = "/sys") -> dict[str, Any]:
    return {
        "sysfs": str(sysfs),
        "nodes": [_node_dict(topology, node) for node in topology.nodes],
        "nics": [_nic_dict(nic) for nic in topology.nics],
        "warnings": list(topology.warnings),
    }


def _node_dict(topology: Topology, node: NumaNode) -> dict[str, Any]:
    return {
        "id": node.id,
        "cpus": sorted(node.cpus),
        "cpulist": format_cpulist(node.cpus),
        "memory_total_kb": node.memory_total_kb,
        "memory_free_kb": node.memory_free_kb,
        "hugepages": [
            {"page_size_kb": size, "page_size": format_page_size(size),
             "total": count.total, "free": count.free}
            for size, count in sorted(node.hugepages.items())
        ],
        "nics": [nic.address for nic in topology.nics_on_node(node.id)],
    }


def _nic_dict(nic: PciNic) -> dict[str, Any]:
    return {
        "address": nic.address,
        "numa_node": nic.numa_node,
        "driver": nic.driver,
        "vendor": nic.vendor,
        "device": nic.device,
        "class": nic.pci_class,
        "netdev": nic.netdev,
        "iommu_group": nic.iommu_group,
        "vfio_device": nic.vfio_device,
        "physfn": nic.physfn,
        "vfs": list(nic.vfs),
        "pf_name": nic.pf_name,
        "sriov_totalvfs": nic.sriov_totalvfs,
        "dpdk_ready": nic.dpdk_ready,
        "state": nic.state,
    }


def format_table(topology: Topology) -> str:
    lines: list[str] = []
    node_ids = set(topology.node_ids)
    for node in topology.nodes:
        memory = f"memory {_gib(node.memory_free_kb)} free of {_gib(node.memory_total_kb)}"
        cpus = format_cpulist(node.cpus) or "none"
        lines.append(f"NUMA node {node.id}   CPUs {cpus} ({len(node.cpus)})   {memory}")
        pages = "   ".join(
            f"{format_page_size(size)} {count.free}/{count.total} free"
            for size, count in sorted(node.hugepages.items())
        )
        lines.append(f"  hugepages  {pages or 'none'}")
        lines.extend(_nic_lines(topology.nics_on_node(node.id)))
        lines.append("")
    # A NIC may name a node that is not here (warned) or none at all: show both, apart.
    strays = sorted({n.numa_node for n in topology.nics if n.numa_node is not None} - node_ids)
    for stray in strays:
        lines.append(f"NUMA node {stray} (named by a NIC, not present)")
        lines.extend(_nic_lines(topology.nics_on_node(stray)))
        lines.append("")
    unknown = topology.nics_on_node(None)
    if unknown:
        lines.append("unknown NUMA node (numa_node -1: firmware gave no affinity)")
        lines.extend(_nic_lines(unknown))
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _nic_lines(nics: Sequence[PciNic]) -> list[str]:
    if not nics:
        return ["  no network devices"]
    rows = [["NIC", "netdev", "driver", "id", "DPDK", "notes"]]
    for nic in nics:
        rows.append([
            nic.address,
            nic.netdev or "-",
            nic.driver or "-",
            f"{nic.vendor}:{nic.device}",
            _STATE_TEXT[nic.state],
            _notes(nic),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _notes(nic: PciNic) -> str:
    notes: list[str] = []
    if nic.physfn:
        notes.append(f"VF of {nic.pf_name or nic.physfn}")
    if nic.vfs or nic.sriov_totalvfs:
        notes.append(f"PF, {len(nic.vfs)}/{nic.sriov_totalvfs} VFs")
    if nic.vfio_device:
        notes.append(nic.vfio_device)
    elif nic.iommu_group is not None:
        notes.append(f"iommu group {nic.iommu_group}")
    return ", ".join(notes)


def _gib(kb: int | None) -> str:
    return "?" if kb is None else f"{kb / (1024 * 1024):.1f} GiB"
