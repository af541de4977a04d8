"""The agent's status as one JSON document: ``<run-dir>/status.json``, rewritten on change.

``numanet status`` reads that file (no network, no port): pools, slots used/free per NUMA
node, registration, vSwitch health. The same document is served at the metrics
endpoint's ``/status``. Writes are atomic (rename), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deviceplugin.fileio import write_atomic
from deviceplugin.health import VSwitchState
from deviceplugin.kubelet_watch import PluginStatus
from deviceplugin.manager import PoolView, ResourceManager

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
STATUS_VERSION = 1


def status_path(run_dir: Path) -> Path:
    return Path(run_dir) / STATUS_FILE


@dataclass(frozen=True)
class NodeUsage:
    """Slots of one pool on one NUMA node (None: NICs whose node is unknown)."""

    total: int
    healthy: int
    used: int  # held by an allocation
    used_healthy: int

    @property
    def free(self) -> int:
        """Healthy slots no allocation holds (an allocated slot may be unhealthy)."""
        return self.healthy - self.used_healthy


def pool_usage(manager: ResourceManager
               ) -> Iterator[tuple[PoolView, dict[int | None, NodeUsage]]]:
    """Every pool with its usage per NUMA node, for the status file and the metrics."""
    allocated = manager.allocations.all()
    for name in manager.pool_names():
        view = manager.pool(name)
        if view is None:
            continue
        used: dict[int | None, list[int]] = {}
        for device_id in allocated:
            device = view.by_id.get(device_id)
            if device is not None:
                row = used.setdefault(device.slot.numa_node, [0, 0])
                row[0] += 1
                row[1] += device.health.healthy
        yield view, {node: NodeUsage(total, healthy, *used.get(node, (0, 0)))
                     for node, (total, healthy) in view.per_node.items()}


def build_status(manager: ResourceManager, plugins: Iterable[PluginStatus],
                 vswitches: Mapping[str, VSwitchState], started_at: float,
                 config_path: str) -> dict[str, Any]:
    registered = {p.pool: p for p in plugins}
    pools = []
    for view, usage in pool_usage(manager):
        plugin = registered.get(view.name)
        pools.append({
            "name": view.name, "resource": view.resource, "kind": view.config.kind,
            "vswitch": view.config.vswitch, "note": view.note,
            "registered": bool(plugin and plugin.registered),
            "socket": plugin.socket if plugin else None,
            "nodes": [{"numa": node, "total": u.total, "healthy": u.healthy, "used": u.used,
                       "free": u.free}
                      for node, u in sorted(usage.items(),
                                            key=lambda kv: (kv[0] is None, kv[0] or 0))],
            "unhealthy": dict(view.reasons),
        })
    return {
        "version": STATUS_VERSION, "pid": os.getpid(), "startedAt": started_at,
        "updatedAt": time.time(), "config": config_path, "pools": pools,
        "vswitches": [{"name": s.name, "healthy": s.healthy, "reason": s.reason,
                       "pollNodes": sorted(s.poll_nodes) if s.poll_nodes is not None else None}
                      for s in vswitches.values()],
    }


class StatusWriter:
    """Rewrites the status file shortly after ``mark_dirty``; coalesces bursts (Allocate)."""

    def __init__(self, path: Path, build: Callable[[], dict[str, Any]],
                 min_interval: float = 0.2) -> None:
        self.path = Path(path)
        self._build = build
        self._min_interval = min_interval
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written: dict[str, Any] | None = None

    def start(self) -> None:
        self.write()
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self._thread.start()

    def mark_dirty(self, *_: object) -> None:
        self._dirty.set()

    def write(self) -> None:
        """Write the document when something in it changed: the refresher marks it dirty
        every round, and ``updatedAt`` then says when the status last changed."""
        try:
            document = self._build()
            unchanged = {**document, "updatedAt": None}
            if unchanged == self._written and self.path.exists():
                return
            write_atomic(self.path, json.dumps(document, indent=1).encode() + b"\n", mode=0o600)
            self._written = unchanged
        except Exception:  # status is for people; it must never take the agent down
            log.exception("cannot write status file path=%s", self.path)

    def stop(self, remove: bool = True) -> None:
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if remove:
            self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        while True:
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            self.write()
            self._stop.wait(self._min_interval)
