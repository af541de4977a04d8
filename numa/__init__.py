"""Node topology from sysfs: NUMA nodes, CPUs, memory, hugepages, PCI NICs, udev events.

Public API (everything else in the package is internal)::

    topo = discover("/sys")           # Topology(nodes, nics, warnings)
    topo.node(0).hugepage(2048)       # HugepageCount(total, free)
    topo.nic("0000:3b:01.0").dpdk_ready
    cpus_to_nodes(parse_cpumask("0x6"), topo)

Hotplug events live in ``numa.hotplug`` (imports pyudev) and the ``numanet topology``
command in ``numa.report``.
"""

from numa.cpus import (
    cpus_to_nodes,
    format_cpulist,
    format_cpumask,
    parse_cpulist,
    parse_cpumask,
)
from numa.discover import discover
from numa.model import DPDK_DRIVERS, HugepageCount, NumaNode, PciNic, Topology
from numa.pagesize import format_page_size, page_size_kb

__all__ = [
    "DPDK_DRIVERS",
    "HugepageCount",
    "NumaNode",
    "PciNic",
    "Topology",
    "cpus_to_nodes",
    "discover",
    "format_cpulist",
    "format_cpumask",
    "format_page_size",
    "page_size_kb",
    "parse_cpulist",
    "parse_cpumask",
]
