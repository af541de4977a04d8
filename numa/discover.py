"""``discover()``: the whole node as one ``Topology`` read from a sysfs root."""

from __future__ import annotations

import os
from pathlib import Path

from numa._sysfs import SysfsReader
from numa.model import Topology
from numa.nodes import read_nodes
from numa.pci import read_nics


def discover(sysfs_root: str | os.PathLike[str] = "/sys", *, nics: bool = True) -> Topology:
    """Read NUMA nodes and network PCI functions under ``sysfs_root``.

    Odd or unreadable entries become strings in ``Topology.warnings``; only a root that
    is not a directory at all raises (NotADirectoryError, naming it). ``nics=False``
    reads the nodes alone (``Topology.nics`` empty): mapping CPUs to nodes, as a vSwitch
    probe does every second, then costs well under a millisecond instead of tens of
    milliseconds on a host with hundreds of VFs.
    """
    root = Path(sysfs_root)
    if not root.is_dir():
        raise NotADirectoryError(
            f"sysfs root {str(root)!r} is not a directory; pass the mount point of sysfs "
            "(normally /sys)"
        )
    fs = SysfsReader(root)
    nodes = read_nodes(fs)
    found = read_nics(fs, (node.id for node in nodes)) if nics else ()
    return Topology(nodes=nodes, nics=found, warnings=tuple(fs.warnings))
