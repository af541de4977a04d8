"""One lock per device ID: calls for one device run one at a time, different devices in
parallel. Entries live only while someone holds or waits for them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class DeviceLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, device_id: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(device_id, (threading.Lock(), 0))
            self._locks[device_id] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[device_id]
                if users == 1:
                    del self._locks[device_id]
                else:
                    self._locks[device_id] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)
