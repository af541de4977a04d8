"""The VPP backend: memif and vhost-user slots in L2 bridge domains, through vpp-papi.

Recovery design. VPP forgets every interface when it restarts, so the backend itself
remembers the spec of every slot it plugged (in memory, keyed by device ID) and puts
them back: a keeper thread watches the API socket, reconnects with exponential backoff
when it drops, and then *replays* every remembered spec (a slot VPP still has is adopted,
a missing one is plugged again). Callers are told through ``on_disconnect`` (slots turn
Unhealthy) and ``on_reconnect`` (with a ``ReplayReport``: which slots came back, which
failed and why); ``health()`` stays unhealthy until the replay is done, so slots turn
Healthy only when their ports are back. This backend is the one owner of replay after
VPP restarts: the agent does not replay anything itself then (agent/vswitches.py).
After an *agent* restart the agent calls ``plug`` for the attachments the CNI recorded,
once per backend object, which adopts the ports VPP kept (``plug`` of a device ID is
idempotent) and makes the backend remember them. ``connect()`` is called once; after
that the keeper thread owns the connection (a second ``connect()`` while connected is a
no-op).

``unplug`` forgets the spec first, so a slot being removed is never resurrected by a
replay, even when VPP is unreachable at that moment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from vswitch.api import (
    CpuTopology,
    Health,
    PluggedPort,
    PortSpec,
    VSwitch,
    VSwitchError,
    VSwitchUnavailable,
)
from vswitch.vpp.bridge import DEFAULT_BD_ID_BASE
from vswitch.vpp.connection import DEFAULT_CLIENT_NAME, VppConnection
from vswitch.vpp.inventory import Snapshot
from vswitch.vpp.memif import DEFAULT_SOCKET_ID_BASE
from vswitch.vpp.placement import polling_cpus
from vswitch.vpp.plumbing import IdBases, owned_ports, plug_port, unplug_port
from vswitch.vpp.tags import is_slot_id
from vswitch.vpp.validate import validate_spec

log = logging.getLogger(__name__)

DEFAULT_API_SOCKET = "/run/vpp/api.sock"


@dataclass(frozen=True)
class ReplayReport:
    """What a replay after a (re)connect did."""

    generation: int  # 1 for the first connection, 2 after the first reconnect, ...
    replugged: tuple[str, ...] = ()  # slots VPP had lost and got back
    adopted: tuple[str, ...] = ()  # slots VPP still had (it did not restart)
    failed: dict[str, str] = field(default_factory=dict)  # device ID -> why


ReconnectCallback = Callable[[ReplayReport], None]
DisconnectCallback = Callable[[str], None]


class VppVSwitch(VSwitch):
    """One VPP instance reached over its binary API socket (``vswitch.create("vpp", ...)``)."""

    name = "vpp"

    def __init__(
        self,
        api_socket: str = DEFAULT_API_SOCKET,
        *,
        api_dir: str | None = None,
        client_name: str = DEFAULT_CLIENT_NAME,
        read_timeout: float = 5.0,
        ping_timeout: float = 2.0,
        watch_interval: float = 0.5,
        backoff: tuple[float, float] = (0.2, 10.0),
        memif_socket_id_base: int = DEFAULT_SOCKET_ID_BASE,
        bridge_domain_id_base: int = DEFAULT_BD_ID_BASE,
    ) -> None:
        self.api_socket = api_socket
        self._conn = VppConnection(
            api_socket,
            api_dir,
            client_name=client_name,
            read_timeout=read_timeout,
            on_lost=self._on_lost,
        )
        self._bases = IdBases(memif_socket_id_base, bridge_domain_id_base)
        self._ping_timeout = ping_timeout
        self._watch_interval = watch_interval
        self._backoff = backoff
        # One change at a time (plug, unplug, replay); the connection has its own lock
        # for single calls and is always taken second.
        self._lock = threading.RLock()
        self._specs: dict[str, PortSpec] = {}
        # Specs of slots whose unplug has not reached VPP yet: not replayed, but a retried
        # unplug still knows which socket file VPP may have left behind.
        self._unplugging: dict[str, PortSpec] = {}
        self._generation = 0
        self._on_reconnect: list[ReconnectCallback] = []
        self._on_disconnect: list[DisconnectCallback] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._lost_reported = False
        # What a (re)connect is doing ("connecting", "replaying") or "": health() reads it
        # without waiting for the connection's lock, and says "not yet" until the replay
        # is done, so the slots turn Healthy only once every one of them is back on VPP.
        self._phase = ""

    # -- VSwitch ---------------------------------------------------------------------------

    def connect(self, timeout: float = 5.0) -> None:
        """Connect within ``timeout`` or raise; either way the backend keeps reconnecting.

        A non-retryable problem (bad ``api_dir``, a VPP without the API numanet needs) is
        raised at once as VSwitchError; an unreachable VPP as VSwitchUnavailable after
        ``timeout``. The keeper thread goes on trying with backoff until ``close()``.
        """
        self._stop.clear()
        with self._lock:
            if self._conn.alive():
                # The keeper reconnected meanwhile: connecting again would drop a live
                # connection and replay for nothing.
                self._start_keeper()
                return
        deadline = time.monotonic() + timeout
        delay = self._backoff[0]
        error: VSwitchError | None = None
        while True:
            try:
                report = self._establish()
            except VSwitchUnavailable as exc:
                error = exc
            except VSwitchError as exc:
                error = exc
                break
            else:
                error = None
                self._notify_reconnect(report)
                break
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, self._backoff[1])
        self._start_keeper()
        if error is not None:
            raise error

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=10.0)
        self._conn.close()

    def health(self) -> Health:
        phase = self._phase
        if phase == "replaying":
            return Health(False, f"reconnected to VPP at {self.api_socket}; putting slots back")
        if phase == "connecting" or not self._conn.alive():
            return Health(
                False,
                f"VPP at {self.api_socket} is unreachable: {self._conn.last_error}; reconnecting",
            )
        try:
            self._conn.call("control_ping", timeout=self._ping_timeout)
        except VSwitchError as exc:
            return Health(False, f"VPP at {self.api_socket} does not answer: {exc}")
        return Health(True, f"connected to VPP {self._conn.version} at {self.api_socket}")

    def poll_numa_nodes(self, topology: CpuTopology) -> frozenset[int] | None:
        """NUMA nodes of the CPUs VPP's worker threads (or its main thread) run on."""
        try:
            reply = self._conn.call("show_threads")
        except VSwitchError as exc:
            log.info("cannot read VPP's threads: %s", exc)
            return None
        cpus = polling_cpus(reply.thread_data)
        if not cpus:
            log.info("VPP reports no pinned polling thread; cannot tell its NUMA nodes")
            return None
        return topology.nodes_of(cpus) or None

    def plug(self, spec: PortSpec) -> PluggedPort:
        validate_spec(spec)
        if spec.on_committed is not None:
            spec.on_committed()  # every step of a VPP plug is an API call: overlap them all
            spec = replace(spec, on_committed=None)  # kept for replays: not to be called again
        with self._lock:
            port = plug_port(self._conn, spec, self._bases)
            self._specs[spec.device_id] = spec
            self._unplugging.pop(spec.device_id, None)
        log.info(
            "plugged VPP port device_id=%s pod=%s kind=%s port=%s network=%s",
            spec.device_id,
            spec.owner.pod,
            spec.kind,
            port.port_name,
            port.network,
        )
        return port

    def unplug(self, device_id: str) -> bool:
        if not is_slot_id(device_id):
            raise VSwitchError(
                f"cannot unplug {device_id!r} from VPP: "
                "not a slot device ID (<pool>-n<numa>-<index>)"
            )
        with self._lock:
            known = self._specs.pop(device_id, None) or self._unplugging.get(device_id)
            if known is not None:
                self._unplugging[device_id] = known
            removed = unplug_port(self._conn, device_id, known)
            self._unplugging.pop(device_id, None)
        log.info(
            "%s device_id=%s pod=%s",
            "unplugged VPP port" if removed else "no VPP port to unplug",
            device_id,
            known.owner.pod if known else "-",
        )
        return removed

    def ports(self) -> list[PluggedPort]:
        with self._lock:
            specs = dict(self._specs)
        return owned_ports(self._conn, specs)

    # -- recovery --------------------------------------------------------------------------

    def on_reconnect(self, callback: ReconnectCallback) -> None:
        """Call ``callback(report)`` after every reconnect, once the replay is done."""
        self._on_reconnect.append(callback)

    def on_disconnect(self, callback: DisconnectCallback) -> None:
        """Call ``callback(reason)`` when the connection to VPP is lost."""
        self._on_disconnect.append(callback)

    def remembered(self) -> tuple[str, ...]:
        """Device IDs the backend would replay after a VPP restart."""
        with self._lock:
            return tuple(sorted(self._specs))

    def replay(self) -> ReplayReport:
        """Put every remembered slot back on VPP; slots that fail stay remembered."""
        with self._lock:
            specs = [self._specs[k] for k in sorted(self._specs)]
            # One read of VPP for the whole replay; each plug records what it adds.
            snap = Snapshot(self._conn)
            present = set(snap.owned()) if specs else set()
            replugged: list[str] = []
            adopted: list[str] = []
            failed: dict[str, str] = {}
            for spec in specs:
                try:
                    plug_port(self._conn, spec, self._bases, snap)
                except VSwitchUnavailable:
                    raise
                except VSwitchError as exc:
                    failed[spec.device_id] = str(exc)
                    log.error(
                        "replay of VPP port failed device_id=%s pod=%s: %s",
                        spec.device_id,
                        spec.owner.pod,
                        exc,
                    )
                    continue
                (adopted if spec.device_id in present else replugged).append(spec.device_id)
            report = ReplayReport(self._generation, tuple(replugged), tuple(adopted), failed)
        if replugged:
            log.info(
                "replayed %d VPP ports after reconnect: %s", len(replugged), ", ".join(replugged)
            )
        return report

    def _establish(self) -> ReplayReport:
        with self._lock:
            self._phase = "connecting"
            try:
                self._conn.open()
                self._phase = "replaying"
                self._generation += 1
                self._lost_reported = False
                return self.replay()
            finally:
                self._phase = ""

    # -- keeper thread ---------------------------------------------------------------------

    def _on_lost(self, reason: str) -> None:
        self._wake.set()

    def _start_keeper(self) -> None:
        if self._keeper is not None and self._keeper.is_alive():
            return
        self._keeper = threading.Thread(target=self._keep, name="numanet-vpp-keeper", daemon=True)
        self._keeper.start()

    def _keep(self) -> None:
        delay = self._backoff[0]
        last_error = ""
        while not self._stop.is_set():
            if self._conn.alive():
                self._wake.wait(self._watch_interval)
                self._wake.clear()
                continue
            self._notify_disconnect(self._conn.last_error)
            try:
                report = self._establish()
            except VSwitchError as exc:
                # Said once per distinct reason: a VPP that stays away (or an api_dir that
                # stays wrong) must not fill the log with one line per retry.
                level = logging.DEBUG if str(exc) == last_error else logging.WARNING
                log.log(level, "VPP at %s not reachable, retrying every %.1fs at most: %s",
                        self.api_socket, self._backoff[1], exc)
                last_error = str(exc)
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            if last_error:
                log.info("VPP at %s is back after: %s", self.api_socket, last_error)
            last_error = ""
            delay = self._backoff[0]
            self._notify_reconnect(report)

    def _notify_disconnect(self, reason: str) -> None:
        if self._lost_reported or self._generation == 0:
            return
        self._lost_reported = True
        for callback in list(self._on_disconnect):
            try:
                callback(reason)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the keeper
                log.exception("on_disconnect callback failed")

    def _notify_reconnect(self, report: ReplayReport) -> None:
        if report.generation <= 1:
            return
        for callback in list(self._on_reconnect):
            try:
                callback(report)
            except Exception:  # noqa: BLE001
                log.exception("on_reconnect callback failed")
