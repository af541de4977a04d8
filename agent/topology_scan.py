"""The agent's topology rounds: NUMA nodes and hugepages every round, NICs when they change.

Hugepage counts change without any udev event, so the nodes are read every round (well
under a millisecond). Walking the PCI network functions costs tens of milliseconds on a
host with hundreds of VFs, which every second on every node adds up to a few percent of a
core for nothing: NICs are rescanned when udev reports a PCI or net event (add, remove,
driver bind/unbind), and every ``nic_interval`` seconds anyway, since udev may drop
events when its buffer overflows. Without udev every round is a full scan.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

import numa

log = logging.getLogger(__name__)

DEFAULT_NIC_INTERVAL = 30.0


class TopologyScanner:
    def __init__(self, sysfs: Path, nic_interval: float = DEFAULT_NIC_INTERVAL) -> None:
        self.sysfs = sysfs
        self.nic_interval = nic_interval
        # Only with udev events do partial rounds stay correct; until the agent says it
        # has them, every round is full.
        self.events = False
        self._lock = threading.Lock()
        self._nics_changed = True
        self._last: numa.Topology | None = None
        self._last_full = 0.0

    def nics_changed(self) -> None:
        """A udev event: the next round reads the NICs again (called on udev's thread)."""
        with self._lock:
            self._nics_changed = True

    def scan(self) -> numa.Topology:
        """One round; OSError as ``numa.discover`` raises it."""
        now = time.monotonic()
        with self._lock:
            full = (self._last is None or self._nics_changed or not self.events
                    or now - self._last_full >= self.nic_interval)
            # Cleared before reading, so an event that arrives meanwhile asks for another.
            self._nics_changed = False
        topology = numa.discover(self.sysfs, nics=full)
        if full:
            self._last, self._last_full = topology, now
            return topology
        assert self._last is not None
        nic_warnings = tuple(w for w in self._last.warnings if w not in topology.warnings)
        return replace(topology, nics=self._last.nics,
                       warnings=topology.warnings + nic_warnings)
