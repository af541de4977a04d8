"""The vSwitches the pools use: connect in the background, watch health, never crash.

A vSwitch that cannot be reached leaves its slots Unhealthy (the manager reads
``states()``); the monitor keeps retrying. Health probes run on the monitor's own thread,
so a hung vSwitch never delays ListAndWatch or hotplug handling. When a vSwitch comes back
healthy, ``on_recovered`` callbacks run (the CNI service replays ports there).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from deviceplugin.config import Config
from deviceplugin.health import VSwitchState
from vswitch.api import VSwitch

log = logging.getLogger(__name__)

Factory = Callable[[str, Config], VSwitch]
DEFAULT_INTERVAL_S = 1.0


def endpoint_of(name: str, config: Config) -> dict[str, object]:
    """Constructor arguments of ``vswitch.create`` for one vSwitch of the config."""
    if name == "ovs":
        return {"db": config.ovs.db, "bridge": config.ovs.bridge}
    endpoint: dict[str, object] = {"api_socket": config.vpp.api_socket}
    if config.vpp.api_dir:
        endpoint["api_dir"] = config.vpp.api_dir
    return endpoint


def default_factory(name: str, config: Config) -> VSwitch:
    import vswitch

    return vswitch.create(name, **endpoint_of(name, config))


@dataclass
class _Entry:
    endpoint: dict[str, object]
    backend: VSwitch | None = None
    connected: bool = False
    state: VSwitchState | None = None


class VSwitchMonitor:
    def __init__(self, factory: Factory = default_factory, sysfs_root: str = "/sys",
                 interval: float = DEFAULT_INTERVAL_S,
                 on_change: Callable[[], None] | None = None) -> None:
        self._factory = factory
        self._sysfs_root = sysfs_root
        self.interval = interval
        self._on_change = on_change
        self._recovered: list[Callable[[str, VSwitch], None]] = []
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._config: Config | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._first_round = threading.Event()

    # --- lifecycle ---

    def configure(self, config: Config) -> None:
        """Use the vSwitches this config's pools reference (new endpoints replace old ones)."""
        stale: list[VSwitch] = []
        with self._lock:
            self._config = config
            wanted = {name: endpoint_of(name, config) for name in config.vswitches_in_use()}
            for name in list(self._entries):
                entry = self._entries[name]
                if wanted.get(name) != entry.endpoint:
                    if entry.backend is not None:
                        stale.append(entry.backend)
                    del self._entries[name]
            for name, endpoint in wanted.items():
                self._entries.setdefault(name, _Entry(endpoint))
        for backend in stale:
            _close(backend)
        self._wake.set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vswitch-monitor", daemon=True)
        self._thread.start()

    def wait_first_round(self, timeout: float) -> bool:
        """Wait (bounded) until every vSwitch was probed once, so the first device list
        already knows where the vSwitches poll; False when it took longer."""
        return self._first_round.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            if entry.backend is not None:
                _close(entry.backend)

    def on_recovered(self, callback: Callable[[str, VSwitch], None]) -> None:
        """Call ``callback(name, backend)`` whenever a vSwitch turns healthy again."""
        self._recovered.append(callback)

    # --- readers ---

    def states(self) -> dict[str, VSwitchState]:
        """Latest known state of every vSwitch in use (unhealthy until the first probe)."""
        with self._lock:
            return {name: entry.state or VSwitchState(name, False, "not probed yet")
                    for name, entry in self._entries.items()}

    def backends(self) -> Mapping[str, VSwitch]:
        """The backend objects (connected or still retrying), for the CNI service."""
        with self._lock:
            return {name: e.backend for name, e in self._entries.items() if e.backend is not None}

    def poll_now(self) -> None:
        """Probe every vSwitch once, now, on the caller's thread."""
        with self._lock:
            names = list(self._entries)
        changed = False
        for name in names:
            changed |= self._probe(name)
        if changed and self._on_change is not None:
            self._on_change()

    # --- internals ---

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_now()
            except Exception:  # the monitor must outlive any backend bug
                log.exception("vSwitch monitor round failed")
            self._first_round.set()
            self._wake.wait(self.interval)
            self._wake.clear()

    def _probe(self, name: str) -> bool:
        with self._lock:
            entry = self._entries.get(name)
            config = self._config
        if entry is None or config is None:
            return False
        state = self._state(name, entry, config)
        with self._lock:
            if self._entries.get(name) is not entry:
                return False  # reconfigured meanwhile
            previous, entry.state = entry.state, state
        if previous == state:
            return False
        if previous is not None and previous.healthy == state.healthy \
                and previous.poll_nodes == state.poll_nodes:
            # Same verdict, new wording (OVS reasons carry counters): no log line.
            return True
        if state.healthy:
            nodes = ",".join(str(n) for n in sorted(state.poll_nodes)) \
                if state.poll_nodes is not None else "unknown"
            log.info("vswitch healthy vswitch=%s poll_numa_nodes=%s", name, nodes)
            if previous is None or not previous.healthy:
                for callback in list(self._recovered):
                    try:
                        callback(name, entry.backend)  # type: ignore[arg-type]
                    except Exception:
                        log.exception("vswitch recovery callback failed vswitch=%s", name)
        else:
            log.warning("vswitch unhealthy vswitch=%s reason=%r", name, state.reason)
        return True

    def _state(self, name: str, entry: _Entry, config: Config) -> VSwitchState:
        try:
            if entry.backend is None:
                entry.backend = self._factory(name, config)
            if not entry.connected:
                entry.backend.connect(timeout=2.0)
                entry.connected = True
            health = entry.backend.health()
            if not health.healthy:
                return VSwitchState(name, False, health.reason)
            return VSwitchState(name, True, "", entry.backend.poll_numa_nodes(self._sysfs_root))
        except Exception as exc:  # VSwitchUnavailable, import errors, anything: retry later
            # connect() again next round: backends make it a no-op while still connected.
            entry.connected = False
            return VSwitchState(name, False, f"{type(exc).__name__}: {exc}")


def _close(backend: VSwitch) -> None:
    try:
        backend.close()
    except Exception:
        log.exception("closing vswitch failed vswitch=%s", getattr(backend, "name", "?"))
