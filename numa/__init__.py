"""Node topology from sysfs: NUMA nodes, CPUs, memory, hugepages, PCI NICs, udev events."""
