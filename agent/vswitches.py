"""The vSwitches the pools use: connect in the background, watch health, never crash.

Each vSwitch is probed on its own thread, so one that is absent or hung never delays
another one's health, nor ListAndWatch or hotplug handling. A vSwitch that cannot be
reached leaves its slots Unhealthy (the manager reads ``states()``) and is retried in the
background; an absent vSwitch never stops the agent.

Recovery has one owner for each case:

- **vSwitch death.** A backend that sees its vSwitch die as it happens
  (``LivenessNotifier``: OVS watches ovs-vswitchd's control socket) wakes the probe at
  once, so the slots turn Unhealthy and ADDs are refused (``down_reason``) within
  milliseconds rather than at the next round.
- **vSwitch restart.** A backend that reconnects and puts back its own ports
  (``SelfRecovering``: the VPP backend, which remembers every slot it plugged and replays
  them on reconnect) is connected once and then only watched; it reports itself
  unhealthy until its replay is done, and its disconnect/reconnect notices wake the probe
  at once. Nobody else replays for it. For any other backend (OVS keeps its ports in its
  database, so this is normally a no-op plug) ``on_recovered`` callbacks run after each
  outage.
- **Agent restart** (or a backend object replaced after a config change). A new backend
  object remembers nothing, so ``on_first_healthy`` callbacks run once per backend object,
  the first time it is healthy: the agent plugs the attachments the CNI recorded (which
  adopts the ports the vSwitch kept) and removes those no pod holds any more. A callback
  registered after that moment runs at once for the backends still waiting for it.

Callbacks run on the vSwitch's probe thread before its new state is published, so its
slots turn Healthy only after the callbacks are done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numa
from deviceplugin.config import Config
from deviceplugin.health import VSwitchState
from vswitch.api import VSwitch, VSwitchError, VSwitchUnavailable

log = logging.getLogger(__name__)

Factory = Callable[[str, Config], VSwitch]
Callback = Callable[[str, VSwitch], None]
DEFAULT_INTERVAL_S = 1.0
CONNECT_TIMEOUT_S = 2.0


@runtime_checkable
class LivenessNotifier(Protocol):
    """A backend that sees its vSwitch die (or come back) as it happens, not only when
    probed (OVS: an idle connection to ovs-vswitchd's control socket)."""

    def on_liveness(self, callback: Callable[[bool], None]) -> None: ...


@runtime_checkable
class SelfRecovering(Protocol):
    """A backend that keeps its connection and replays its own ports after a restart."""

    def on_reconnect(self, callback: Callable[[object], None]) -> None: ...

    def on_disconnect(self, callback: Callable[[str], None]) -> None: ...


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


@dataclass(eq=False)
class _Entry:
    name: str
    endpoint: dict[str, object]
    backend: VSwitch | None = None
    connected: bool = False  # connect() succeeded, or a SelfRecovering backend was started
    state: VSwitchState | None = None
    first_healthy_done: bool = False  # on_first_healthy ran for this backend object
    wake: threading.Event = field(default_factory=threading.Event)
    probed: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    # One recovery at a time per vSwitch (probe thread or a callback being registered).
    recovery: threading.Lock = field(default_factory=threading.Lock)


class VSwitchMonitor:
    def __init__(self, factory: Factory = default_factory, sysfs_root: str = "/sys",
                 interval: float = DEFAULT_INTERVAL_S,
                 on_change: Callable[[], None] | None = None) -> None:
        self._factory = factory
        self._sysfs_root = sysfs_root
        self.interval = interval
        self._on_change = on_change
        self._first_healthy: list[Callback] = []
        self._recovered: list[Callback] = []
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._retired: list[_Entry] = []  # replaced entries whose thread still runs
        self._config: Config | None = None
        self._running = False
        self._stop = threading.Event()

    # --- lifecycle ---

    def configure(self, config: Config) -> None:
        """Use the vSwitches this config's pools reference (new endpoints replace old ones)."""
        idle: list[_Entry] = []
        with self._lock:
            self._config = config
            wanted = {name: endpoint_of(name, config) for name in config.vswitches_in_use()}
            for name, entry in list(self._entries.items()):
                if wanted.get(name) == entry.endpoint:
                    continue
                del self._entries[name]
                entry.wake.set()
                if entry.thread is not None and entry.thread.is_alive():
                    self._retired.append(entry)  # its thread closes the backend on exit
                else:
                    idle.append(entry)
            for name, endpoint in wanted.items():
                if name not in self._entries:
                    entry = self._entries[name] = _Entry(name, endpoint)
                    if self._running:
                        self._spawn(entry)
        for entry in idle:
            _close(entry)

    def start(self) -> None:
        self._stop.clear()
        with self._lock:
            self._running = True
            for entry in self._entries.values():
                self._spawn(entry)

    def wait_first_round(self, timeout: float) -> bool:
        """Wait (bounded) until every vSwitch was probed once, so the first device list
        already knows where the vSwitches poll; False when it took longer."""
        with self._lock:
            entries = list(self._entries.values())
        deadline = time.monotonic() + timeout
        return all(entry.probed.wait(max(0.0, deadline - time.monotonic()))
                   for entry in entries)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._running = False
            entries, self._entries = list(self._entries.values()), {}
            entries += self._retired
            self._retired = []
        for entry in entries:
            entry.wake.set()
        for entry in entries:
            if entry.thread is not None:
                entry.thread.join(timeout=10)
            _close(entry)

    def on_first_healthy(self, callback: Callback) -> None:
        """Call ``callback(name, backend)`` once per backend object, when it is first healthy
        (runs at once, on this thread, for backends that already are)."""
        self._first_healthy.append(callback)
        with self._lock:
            waiting = [e for e in self._entries.values()
                       if e.state is not None and e.state.healthy and not e.first_healthy_done]
        for entry in waiting:
            self._recover(entry, after_outage=False)

    def on_recovered(self, callback: Callback) -> None:
        """Call ``callback(name, backend)`` when a vSwitch that does not restore its own ports
        is healthy again after an outage."""
        self._recovered.append(callback)

    # --- readers ---

    def states(self) -> dict[str, VSwitchState]:
        """Latest known state of every vSwitch in use (unhealthy until the first probe)."""
        with self._lock:
            return {name: entry.state or VSwitchState(name, False, "not probed yet")
                    for name, entry in self._entries.items()}

    def down_reason(self, name: str) -> str | None:
        """Why vSwitch ``name`` is down when its last probe found it so; None when it is
        healthy, not probed yet, or not one of ours (the CNI refuses an ADD on a vSwitch
        known down at once instead of waiting for it)."""
        with self._lock:
            entry = self._entries.get(name)
            state = entry.state if entry is not None else None
        if state is None or state.healthy:
            return None
        return state.reason or "unhealthy"

    def backends(self) -> Mapping[str, VSwitch]:
        """The backend objects (connected or still retrying), for the CNI service."""
        with self._lock:
            return {name: e.backend for name, e in self._entries.items() if e.backend is not None}

    # --- internals ---

    def _spawn(self, entry: _Entry) -> None:
        entry.thread = threading.Thread(target=self._run, args=(entry,),
                                        name=f"vswitch-monitor-{entry.name}", daemon=True)
        entry.thread.start()

    def _current(self, entry: _Entry) -> bool:
        with self._lock:
            return self._entries.get(entry.name) is entry

    def _run(self, entry: _Entry) -> None:
        while not self._stop.is_set() and self._current(entry):
            changed = False
            try:
                changed = self._probe(entry)
            except Exception:  # the monitor must outlive any backend bug
                log.exception("vswitch probe failed vswitch=%s", entry.name)
            entry.probed.set()
            if changed and self._on_change is not None:
                self._on_change()
            entry.wake.wait(self.interval)
            entry.wake.clear()
        if not self._stop.is_set():  # replaced by configure(): the backend is ours to close
            _close(entry)
            with self._lock:
                if entry in self._retired:
                    self._retired.remove(entry)

    def _probe(self, entry: _Entry) -> bool:
        with self._lock:
            config = self._config
        if config is None or not self._current(entry):
            return False
        state = self._state(entry, config)
        previous = entry.state
        back = previous is not None and not previous.healthy
        if state.healthy and (back or previous is None or not entry.first_healthy_done):
            # Before the state is published: slots turn Healthy once their ports are back.
            self._recover(entry, after_outage=back)
        with self._lock:
            if self._entries.get(entry.name) is not entry:
                return False  # reconfigured meanwhile
            entry.state = state
        if previous == state:
            return False
        if previous is not None and previous.healthy == state.healthy \
                and previous.poll_nodes == state.poll_nodes:
            # Same verdict, new wording (OVS reasons carry counters): no log line.
            return True
        if state.healthy:
            nodes = ",".join(str(n) for n in sorted(state.poll_nodes)) \
                if state.poll_nodes is not None else "unknown"
            log.info("vswitch healthy vswitch=%s poll_numa_nodes=%s", entry.name, nodes)
        else:
            log.warning("vswitch unhealthy vswitch=%s reason=%r", entry.name, state.reason)
        return True

    def _recover(self, entry: _Entry, *, after_outage: bool) -> None:
        with entry.recovery:
            backend = entry.backend
            if backend is None:
                return
            first = not entry.first_healthy_done
            if first:
                if not self._first_healthy:
                    return  # nobody to tell yet: stays pending until a callback registers
                callbacks, entry.first_healthy_done = list(self._first_healthy), True
                why = "first healthy"
            elif after_outage and not isinstance(backend, SelfRecovering):
                callbacks, why = list(self._recovered), "back after an outage"
            else:
                if after_outage:
                    log.info("vswitch back, it restored its own ports vswitch=%s", entry.name)
                return
            for callback in callbacks:
                try:
                    callback(entry.name, backend)
                except VSwitchUnavailable as exc:
                    # Gone again half way: the whole first-healthy pass runs again when it
                    # is back (every step is idempotent).
                    log.warning("vswitch went away during its recovery vswitch=%s when=%s "
                                "error=%s", entry.name, why, exc)
                    if first:
                        entry.first_healthy_done = False
                    return
                except Exception:
                    log.exception("vswitch callback failed vswitch=%s when=%s", entry.name, why)

    def _state(self, entry: _Entry, config: Config) -> VSwitchState:
        name = entry.name
        try:
            if entry.backend is None:
                entry.backend = self._factory(name, config)
                if isinstance(entry.backend, SelfRecovering):
                    # Its keeper thread notices a lost connection before any probe would.
                    entry.backend.on_disconnect(lambda _reason: entry.wake.set())
                    entry.backend.on_reconnect(lambda _report: entry.wake.set())
                if isinstance(entry.backend, LivenessNotifier):
                    # A death is probed at once: the slots turn Unhealthy and ADDs are
                    # refused within milliseconds, not at the next round.
                    entry.backend.on_liveness(lambda _alive: entry.wake.set())
            if not entry.connected:
                _connect(entry)
            health = entry.backend.health()
            if not health.healthy:
                return VSwitchState(name, False, health.reason)
            return VSwitchState(name, True, "", self._poll_nodes(entry.backend))
        except Exception as exc:  # VSwitchUnavailable, import errors, anything: retry later
            if not isinstance(entry.backend, SelfRecovering):
                entry.connected = False  # connect() again next round: a no-op while connected
            return VSwitchState(name, False, f"{type(exc).__name__}: {exc}")

    def _poll_nodes(self, backend: VSwitch) -> frozenset[int] | None:
        """Where the vSwitch polls; None (placement unknown) when sysfs cannot be read."""
        try:
            # Nodes only: this runs every probe, and NICs cost tens of ms on a big host.
            topology = numa.discover(self._sysfs_root, nics=False)
        except OSError as exc:
            log.warning("cannot read the NUMA topology for vSwitch placement: %s", exc)
            return None
        return backend.poll_numa_nodes(topology)


def _connect(entry: _Entry) -> None:
    backend = entry.backend
    assert backend is not None
    # A SelfRecovering backend gets one attempt and is never asked again: once connect()
    # ran, even when it failed, its own thread retries with backoff. So an absent VPP
    # holds up neither this probe nor the agent's start (wait_first_round).
    self_recovering = isinstance(backend, SelfRecovering)
    try:
        backend.connect(timeout=0.0 if self_recovering else CONNECT_TIMEOUT_S)
    except VSwitchError:
        entry.connected = self_recovering
        raise
    entry.connected = True


def _close(entry: _Entry) -> None:
    backend, entry.backend = entry.backend, None
    if backend is None:
        return
    try:
        backend.close()
    except Exception:
        log.exception("closing vswitch failed vswitch=%s", entry.name)
