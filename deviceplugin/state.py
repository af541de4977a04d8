"""Which devices the kubelet allocated, kept on disk so an agent restart still knows.

One small JSON file per device under ``<run-dir>/allocated/`` (not one big file): an
Allocate then costs one small atomic write however many slots exist, and a crash between
two writes cannot lose the others. The kubelet never says when a device is freed; the
CNI's garbage collection calls ``release`` when no pod holds a device any more.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deviceplugin import naming
from deviceplugin.fileio import load_json_files, write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AllocationRecord:
    device_id: str
    pool: str
    resource: str
    numa_node: int | None
    allocated_at: float  # unix time of the latest Allocate


def _parse(data: Any) -> AllocationRecord:
    record = AllocationRecord(**data)
    naming.validate_device_id(record.device_id)
    return record


class AllocationStore:
    """Thread safe; the in-memory view is the source for readers, the files for restarts."""

    def __init__(self, run_dir: Path) -> None:
        self.directory = Path(run_dir) / "allocated"
        self._lock = threading.Lock()
        self._records: dict[str, AllocationRecord] = {}

    def load(self) -> dict[str, AllocationRecord]:
        """Read what a previous agent left; files that do not parse are reported and removed."""
        records = load_json_files(self.directory, _parse, lambda r: r.device_id,
                                  "allocation record")
        with self._lock:
            self._records = records
        return dict(records)

    def record(self, device_id: str, pool: str, resource: str, numa_node: int | None) -> None:
        record = AllocationRecord(naming.validate_device_id(device_id), pool, resource,
                                  numa_node, time.time())
        write_atomic(self.directory / f"{device_id}.json",
                     json.dumps(asdict(record)).encode(), mode=0o600, dir_mode=0o700)
        with self._lock:
            self._records[device_id] = record

    def release(self, device_id: str, expected: AllocationRecord | None = None) -> bool:
        """Forget the allocation; with ``expected``, only while it is still that record."""
        naming.validate_device_id(device_id)
        with self._lock:
            if expected is not None and self._records.get(device_id) != expected:
                return False
            (self.directory / f"{device_id}.json").unlink(missing_ok=True)
            return self._records.pop(device_id, None) is not None

    def get(self, device_id: str) -> AllocationRecord | None:
        with self._lock:
            return self._records.get(device_id)

    def all(self) -> dict[str, AllocationRecord]:
        with self._lock:
            return dict(self._records)

    def __contains__(self, device_id: object) -> bool:
        with self._lock:
            return device_id in self._records

