"""Keep one registered server per pool, through kubelet restarts.

A restarting kubelet deletes every socket in its device-plugins directory and creates a
new ``kubelet.sock``. Every ~100 ms this supervisor checks two things: did ``kubelet.sock``
change identity (inode) since a pool last registered, and is each pool's own socket still
there? Either way the pool's server is restarted and registered again, keeping the device
IDs (they come from the resource manager, which a kubelet restart does not touch).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from deviceplugin import naming
from deviceplugin.allocate import Allocator
from deviceplugin.manager import ResourceManager
from deviceplugin.registration import (
    KUBELET_SOCKET_NAME,
    RegistrationError,
    register,
    socket_identity,
)
from deviceplugin.server import PoolServer

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1
_MAX_BACKOFF_S = 2.0


@dataclass
class _Entry:
    server: PoolServer
    resource: str
    registered_with: tuple[int, int] | None = None  # kubelet.sock identity at registration
    registered_at: float | None = None
    next_try: float = 0.0
    failures: int = 0


@dataclass(frozen=True)
class PluginStatus:
    pool: str
    resource: str
    socket: str
    serving: bool
    registered: bool
    registered_at: float | None


class PluginSupervisor:
    def __init__(self, manager: ResourceManager, allocator: Allocator, plugin_dir: Path,
                 poll_interval: float = POLL_INTERVAL_S,
                 on_registered: Callable[[str], None] | None = None) -> None:
        self.manager = manager
        self.allocator = allocator
        self.plugin_dir = Path(plugin_dir)
        self.kubelet_socket = self.plugin_dir / KUBELET_SOCKET_NAME
        self.poll_interval = poll_interval
        self._on_registered = on_registered
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kubelet-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and every server; sockets are removed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            entry.server.stop()

    def sync(self, pools: Iterable[str]) -> None:
        """Serve exactly these pools: start new ones, stop removed ones, register new ones."""
        wanted = list(pools)
        with self._lock:
            for name in list(self._entries):
                resource = self.manager.pool_resource(name)
                if name not in wanted or resource != self._entries[name].resource:
                    log.info("stopping device plugin pool=%s reason=%s", name,
                             "pool removed" if name not in wanted else "resource renamed")
                    self._entries.pop(name).server.stop()
            for name in wanted:
                if name in self._entries:
                    continue
                resource = self.manager.pool_resource(name)
                if resource is None:
                    continue
                server = PoolServer(name, self.manager, self.allocator,
                                    self.plugin_dir / naming.plugin_socket_name(name))
                server.start()
                self._entries[name] = _Entry(server, resource)
        self.check()

    def status(self) -> list[PluginStatus]:
        with self._lock:
            return [PluginStatus(name, e.resource, str(e.server.socket_path), e.server.serving,
                                 e.registered_with is not None, e.registered_at)
                    for name, e in self._entries.items()]

    def check(self) -> None:
        """One round: restart vanished servers, (re-)register where the kubelet changed."""
        kubelet = socket_identity(self.kubelet_socket)
        with self._lock:
            for name, entry in self._entries.items():
                self._check_entry(name, entry, kubelet)

    # --- internals ---

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.check()
            except Exception:  # the watch must survive anything one round throws
                log.exception("kubelet watch round failed")

    def _check_entry(self, name: str, entry: _Entry, kubelet: tuple[int, int] | None) -> None:
        restart = None
        if not entry.server.socket_intact():
            restart = "its socket vanished"
        elif kubelet is not None and entry.registered_with not in (None, kubelet):
            restart = "kubelet.sock was re-created"
        if restart:
            log.info("restarting device plugin pool=%s reason=%r", name, restart)
            entry.server.stop(grace=0)
            entry.server.start()
            entry.registered_with = None
            entry.registered_at = None
            entry.next_try = 0.0
        if kubelet is None or entry.registered_with == kubelet:
            return
        now = time.monotonic()
        if now < entry.next_try:
            return
        try:
            register(self.kubelet_socket, entry.server.socket_path.name, entry.resource,
                     timeout=1.0)
        except RegistrationError as exc:
            entry.failures += 1
            entry.next_try = now + min(self.poll_interval * 2 ** entry.failures, _MAX_BACKOFF_S)
            # A restarting kubelet refuses for a moment: say so quietly, louder if it lasts.
            if entry.failures == 1:
                log.info("registration failed, retrying pool=%s resource=%s error=%s",
                         name, entry.resource, exc)
            elif entry.failures == 5 or entry.failures % 50 == 0:
                log.warning("registration failed pool=%s resource=%s attempt=%d error=%s",
                            name, entry.resource, entry.failures, exc)
            return
        entry.registered_with = kubelet
        entry.registered_at = time.time()
        entry.failures = 0
        log.info("registered with kubelet pool=%s resource=%s endpoint=%s", name,
                 entry.resource, entry.server.socket_path.name)
        if self._on_registered is not None:
            self._on_registered(name)
