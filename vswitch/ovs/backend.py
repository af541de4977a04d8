"""OVS-DPDK backend of ``vswitch.api.VSwitch`` through ovsdbapp (Open_vSwitch schema).

One long-lived database connection; each plug or unplug is one OVSDB transaction that
also bumps ``next_cfg``, after which the calling thread waits for ovs-vswitchd to apply it
(``cur_cfg``) and reads the Interface's ``ofport`` / ``error``: OVS reports a refused
port (bad devargs, a socket it cannot create) only there, after the commit succeeded,
so a failed port is removed again and the caller gets a VSwitchError.

``prepare`` makes a slot's port at Allocate, before any pod owns it; the ADD's ``plug``
then claims it with one transaction on ``external_ids`` alone, which ovs-vswitchd does
not act on, so the pod's ADD no longer waits for DPDK to set the port up (a VLAN or MTU
other than the prepared one is set in the same transaction, and then waited for).

``unplug`` answers once the port is gone from the database, without waiting for
ovs-vswitchd to apply it (about 10 ms a port, and a burst of removals waits for all of
them): the removal settles in the background (``_Settler``), and what must not happen
before it has, waits for it there instead. A slot's socket must not be reused while
DPDK still holds it, so the next ``plug`` or ``prepare`` of the device first waits for
its removal to be applied (bounded by ``timeout``, as the wait of the unplug was); the
socket files a removed port leaves go at once (a name holds no connection, and nothing
makes a new socket at the path before that next plug). The database never
brings the port back (ovs-vswitchd reads the current rows, not the history), so a
vswitchd that dies or restarts meanwhile changes nothing.

ovs-vswitchd's death is seen the moment it happens (``liveness.VswitchdWatch``, an idle
connection to its control socket): ``health`` then answers at once, the listeners of
``on_liveness`` (the agent's monitor) are told, and nothing waits for a ``cur_cfg`` a
dead vswitchd will never raise (its sockets died with it).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ovsdbapp import exceptions as ovsdbapp_exceptions

from vswitch.api import (
    TAG_DEVICE_ID,
    TAG_MEMIF_QUEUES,
    CpuTopology,
    Health,
    Owner,
    PluggedPort,
    PortSpec,
    VSwitch,
    VSwitchError,
    VSwitchUnavailable,
)
from vswitch.ovs import ports as _ports
from vswitch.ovs.commands import (
    ClaimPort,
    PlugPort,
    PlugRefused,
    Probe,
    SetMemifQueues,
    UnplugPort,
    find_bridge_of,
)
from vswitch.ovs.connection import Connection, read_column
from vswitch.ovs.liveness import VswitchdWatch
from vswitch.sockfiles import NotASocket, remove_socket_file

log = logging.getLogger(__name__)

DEFAULT_DB = "unix:/run/openvswitch/db.sock"
DEFAULT_BRIDGE = "br-numanet"
# health() must answer while the agent polls it; a live vswitchd acks within milliseconds.
_HEALTH_PROBE_TIMEOUT = 2.0


def _first(value: Any) -> Any:
    """Optional OVSDB columns arrive as [] or [x]."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _interface_outcome(tables: Any, name: str) -> tuple[str, str] | None:
    """What ovs-vswitchd made of the interface ``name``: ("ok", ""), ("error", why), or
    None while it has not set it up yet (no error, no ofport)."""
    for iface in tables["Interface"].rows.values():
        if read_column(iface, "name") == name:
            error = _first(read_column(iface, "error"))
            ofport = _first(read_column(iface, "ofport"))
            if error:
                return "error", str(error)
            if ofport is not None:
                return ("ok", "") if ofport > 0 else ("error", f"ofport={ofport}")
            return None
    return "error", "the interface row vanished"


def _describe(spec: PortSpec) -> str:
    owner = spec.owner
    return f"device_id={spec.device_id} pod={owner.pod}"


class OvsVSwitch(VSwitch):
    """Ports for numanet slots on an OVS-DPDK netdev bridge.

    ``bridge`` is used when a spec names no network. ``vhost_sock_dir`` is where
    ovs-vswitchd creates ``dpdkvhostuser`` sockets (its run directory plus
    ``other_config:vhost-sock-dir``); by default the directory of a ``unix:`` db socket.

    Ports by container side (DESIGN.md "Roles"):

    - vhost-user server: ``dpdkvhostuserclient`` with ``vhost-server-path`` = slot socket;
    - vhost-user client: ``dpdkvhostuser``; OVS's socket is hard-linked into the slot
      (same filesystem needed) and the link is removed at unplug;
    - memif slave: ``dpdk`` with ``net_memif`` devargs, OVS is the server and creates the
      slot socket; the container must open ``tags["numanet-memif-queues"]`` queue pairs;
    - memif master: OVS connects once at plug time, so the container's socket must exist.
    """

    name = "ovs"

    def __init__(
        self,
        db: str = DEFAULT_DB,
        bridge: str = DEFAULT_BRIDGE,
        *,
        timeout: float = 5.0,
        vhost_sock_dir: str | None = None,
        vswitchd_ctl: str | None = None,
    ) -> None:
        self.db = db
        self.bridge = bridge
        self.timeout = timeout
        self._vhost_sock_dir = vhost_sock_dir
        self._conn: Connection | None = None
        self._connect_lock = threading.Lock()
        # ovs-vswitchd's control socket: given, or found in the db socket's directory.
        self._vswitchd_ctl = vswitchd_ctl
        self._watch: VswitchdWatch | None = None
        self._liveness_listeners: list[Callable[[bool], None]] = []
        self._settler = _Settler(self)

    # -- connection --------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        with self._connect_lock:
            if self._conn is not None:
                return
            try:
                self._conn = Connection(self.db, timeout if timeout is not None else self.timeout)
            except Exception as exc:
                raise VSwitchUnavailable(
                    f"cannot connect to ovsdb-server at {self.db}: {exc}. Start Open vSwitch "
                    "(ovsdb-server and ovs-vswitchd-dpdk) or point vswitches.ovs.db at its socket"
                ) from exc
            log.info("connected to ovsdb db=%s bridge=%s", self.db, self.bridge)
            run_dir = os.path.dirname(self.db[len("unix:"):]) if self.db.startswith("unix:") \
                else None
            if self._watch is None and (run_dir or self._vswitchd_ctl):
                self._watch = VswitchdWatch(run_dir, self._liveness_changed,
                                            ctl=self._vswitchd_ctl).start()

    def close(self) -> None:
        self._settler.drain(self.timeout)
        with self._connect_lock:
            conn, self._conn = self._conn, None
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()
        if conn is not None:
            conn.close()

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until ovs-vswitchd has applied every change committed so far, this
        backend's removals settling in the background included (benches and tests start
        from a quiet vswitchd with it); False when that took longer than ``timeout``
        (default: the backend's)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._settler.drain(timeout)
        conn = self._connection()

        def next_cfg(tables: Any) -> int | None:
            rows = list(tables["Open_vSwitch"].rows.values())
            return rows[0].next_cfg if rows else None

        return self._wait_applied(conn, conn.read(next_cfg),
                                  max(0.0, deadline - time.monotonic()))

    # -- ovs-vswitchd's liveness ------------------------------------------------------------

    def on_liveness(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(alive)`` when ovs-vswitchd is seen to die or to come back (from
        the watch's thread); the agent's monitor probes at once then."""
        self._liveness_listeners.append(callback)

    @property
    def vswitchd_alive(self) -> bool | None:
        """What the control-socket watch knows: True (connected to a running ovs-vswitchd),
        False (not running), None (not known: no watch, or not connected yet)."""
        watch = self._watch
        return None if watch is None else watch.alive

    def vswitchd_down(self) -> str | None:
        """Why ovs-vswitchd is known not to run, or None (it runs, or it cannot be told)."""
        watch = self._watch
        if watch is None or watch.alive is not False:
            return None
        return watch.reason or "ovs-vswitchd is not running"

    def _liveness_changed(self, alive: bool) -> None:
        conn = self._conn
        if conn is not None:
            conn.poke()  # waiters for cur_cfg look again, and give up on a dead vswitchd
        if not alive:
            self._settler.poke()
        for callback in list(self._liveness_listeners):
            try:
                callback(alive)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the watch
                log.exception("ovs-vswitchd liveness listener failed")

    def _connection(self) -> Connection:
        """The live connection, connecting first if needed; VSwitchUnavailable when down."""
        conn = self._conn
        if conn is None:
            self.connect()
            conn = self._conn
        if conn is None:  # closed by another thread meanwhile
            raise VSwitchUnavailable(f"the connection to {self.db} was closed")
        if not conn.is_connected():
            raise VSwitchUnavailable(
                f"lost the connection to ovsdb-server at {self.db} (reconnecting): check that "
                "ovsdb-server runs, then try again"
            )
        return conn

    def _commit(
        self, conn: Connection, what: str, *commands: Any, bump_cfg: bool = True
    ) -> tuple[list[Any], int | None]:
        """One transaction; returns the command results and the next_cfg it asked for
        (None with ``bump_cfg=False``, for changes ovs-vswitchd has nothing to apply of)."""
        try:
            with conn.api.transaction(
                check_error=True, log_errors=False, bump_cfg=bump_cfg
            ) as txn:
                for cmd in commands:
                    txn.add(cmd)
        except ovsdbapp_exceptions.TimeoutException as exc:
            raise VSwitchUnavailable(
                f"ovsdb-server at {self.db} did not answer {what} within {self.timeout:g} s: "
                "check that it runs and is not overloaded, then try again"
            ) from exc
        except PlugRefused as exc:
            raise VSwitchError(f"OVS refused {what}: {exc}") from exc
        except RuntimeError as exc:
            if not conn.is_connected():
                raise VSwitchUnavailable(
                    f"lost ovsdb-server at {self.db} during {what}: {exc}"
                ) from exc
            raise VSwitchError(f"OVS refused {what}: {exc}") from exc
        return [cmd.result for cmd in commands], txn.next_cfg

    def _wait_applied(self, conn: Connection, next_cfg: int | None, timeout: float) -> bool:
        """True once ovs-vswitchd has applied the configuration up to ``next_cfg``."""
        if next_cfg is None:
            return True

        def applied(tables: Any) -> bool:
            rows = list(tables["Open_vSwitch"].rows.values())
            return bool(rows) and rows[0].cur_cfg >= next_cfg

        def applied_or_dead(tables: Any) -> str | None:
            if applied(tables):
                return "applied"
            return "dead" if self.vswitchd_down() else None

        return conn.wait_for(applied_or_dead, timeout) == "applied"

    # -- reads -------------------------------------------------------------------------

    @staticmethod
    def _find_port(tables: Any, name: str) -> tuple[Any, Any] | None:
        for port in tables["Port"].rows.values():
            if read_column(port, "name") == name:
                return port, find_bridge_of(tables, port)
        return None

    def ports(self) -> list[PluggedPort]:
        conn = self._connection()

        def owned(tables: Any) -> list[PluggedPort]:
            found = []
            for bridge in tables["Bridge"].rows.values():
                bridge_name = read_column(bridge, "name")
                for port in read_column(bridge, "ports"):
                    ids = read_column(port, "external_ids")
                    if _ports.is_ours(ids):
                        found.append(_ports.plugged_from_tags(read_column(port, "name"),
                                                              bridge_name, ids))
            return found

        return sorted(conn.read(owned), key=lambda p: p.device_id)

    def port(self, device_id: str) -> PluggedPort | None:
        """By the port's name (derived from the device ID), not a walk over every port."""
        found = self._plugged(self._connection(), device_id, refuse_foreign=False)
        return found[0] if found else None

    def _plugged(
        self, conn: Connection, device_id: str, *, refuse_foreign: bool = True
    ) -> tuple[PluggedPort, dict[str, str]] | None:
        """The device's port and its external_ids. A port of someone else's with the name
        numanet derives is refused (VSwitchError), or without ``refuse_foreign`` it is
        simply not this device's (None)."""
        name = _ports.port_name(device_id)

        def lookup(tables: Any) -> tuple[PluggedPort, dict[str, str]] | None:
            found = self._find_port(tables, name)
            if found is None:
                return None
            port, bridge = found
            ids = read_column(port, "external_ids")
            if not _ports.is_ours(ids) or ids.get(TAG_DEVICE_ID) != device_id:
                if not refuse_foreign:
                    return None
                raise VSwitchError(
                    f"port {name} on OVS is not numanet's port for device_id={device_id} "
                    f"(external_ids {ids}): remove it with 'ovs-vsctl del-port {name}'"
                )
            return _ports.plugged_from_tags(name, bridge.name if bridge else "", ids), ids

        return conn.read(lookup)

    # -- plug / unplug ---------------------------------------------------------------------

    def plug(self, spec: PortSpec) -> PluggedPort:
        plan = _ports.plan_port(spec, self.bridge)
        conn = self._connection()
        self._settler.wait(spec.device_id, self.timeout)
        existing = self._plugged(conn, spec.device_id)
        if existing is not None and not existing[0].prepared:
            stale = self._stale(spec, plan, *existing) if spec.take_over else ""
            if not stale:
                return self._replug(conn, spec, plan, *existing)
            log.warning("unrecorded port on device, removing it device_id=%s pod=%s port=%s "
                        "(%s)", spec.device_id, spec.owner.pod, plan.name, stale)
            self._remove(conn, spec.device_id, *existing)
            existing = None
        if existing is not None:
            claimed = self._claim(conn, spec, plan, *existing)
            if claimed is not None:
                return claimed
        return self._create(conn, spec, plan)

    def prepare(self, spec: PortSpec) -> PluggedPort:
        if spec.owner != Owner():
            raise VSwitchError(
                f"a port prepared ahead of its pod has no owner yet; {_describe(spec)} names "
                "one: plug it instead"
            )
        plan = _ports.plan_port(spec, self.bridge, prepared=True)
        conn = self._connection()
        self._settler.wait(spec.device_id, self.timeout)
        existing = self._plugged(conn, spec.device_id)
        if existing is not None:
            return existing[0]
        return self._create(conn, spec, plan)

    def _create(self, conn: Connection, spec: PortSpec, plan: _ports.PortPlan) -> PluggedPort:
        """A new port: one transaction, then wait for ovs-vswitchd to set it up; removed
        again when it refuses it."""
        if spec.kind == "memif":
            plan = _ports.with_memif_queues(
                plan, _ports.memif_queue_pairs(self._other_config(conn, "pmd-cpu-mask"))
            )
        try:
            _, next_cfg = self._commit(
                conn, f"plug of {_describe(spec)} port {plan.name}", PlugPort(conn.api, plan)
            )
        finally:
            _committed(spec)
        try:
            self._check_applied(conn, plan, next_cfg, spec)
            if plan.link_socket_to:
                self._link_vhost_socket(conn, plan)
        except BaseException:
            self._rollback(conn, plan, spec)
            raise
        log.info(
            "%s port %s, device_id=%s pod=%s bridge=%s type=%s socket=%s",
            "prepared" if spec.owner == Owner() else "plugged",
            plan.name,
            spec.device_id,
            spec.owner.pod,
            plan.bridge,
            plan.iface_type,
            spec.socket_path,
            extra={"device_id": spec.device_id, "port": plan.name},
        )
        return _ports.plugged_from_tags(plan.name, plan.bridge, plan.port_external_ids)

    def _claim(
        self,
        conn: Connection,
        spec: PortSpec,
        plan: _ports.PortPlan,
        prepared: PluggedPort,
        ids: dict[str, str],
    ) -> PluggedPort | None:
        """Give a prepared port the spec's owner; None when it cannot serve this spec (other
        settings, or vswitchd did not take it) and was removed, so the caller creates it."""
        _committed(spec)  # a claim is one quick transaction: nothing to wait for first
        settings, differences = _ports.claim_differences(plan, ids)
        if prepared.network != plan.bridge:
            differences.append(f"bridge: {prepared.network!r} -> {plan.bridge!r}")
        outcome = conn.read(lambda tables: _interface_outcome(tables, plan.name))
        problem = "" if outcome == ("ok", "") else (
            f"ovs-vswitchd reports {outcome[1]}" if outcome else "ovs-vswitchd has not set it up")
        if differences or problem:
            log.info(
                "prepared port %s does not fit, making it anew, device_id=%s pod=%s: %s",
                plan.name,
                spec.device_id,
                spec.owner.pod,
                problem or "; ".join(differences),
            )
            self._remove(conn, spec.device_id, prepared, ids)
            return None
        # Queue tags were derived when the port was made; they stay until refreshed below.
        derived = {k: v for k, v in ids.items() if k == TAG_MEMIF_QUEUES}
        port_ids = {**plan.port_external_ids, **derived}
        iface_ids = {**plan.iface_external_ids, **derived}
        results, next_cfg = self._commit(
            conn,
            f"claim of {_describe(spec)} port {plan.name}",
            ClaimPort(conn.api, plan, port_ids, iface_ids, bool(settings)),
            bump_cfg=bool(settings),
        )
        if not results[0]:
            return None  # removed behind our back: make it anew
        if settings:
            # The pod's traffic must never run on the prepared port's VLAN: wait for it.
            try:
                self._check_applied(
                    conn,
                    plan,
                    next_cfg,
                    spec,
                    action=f"the VLAN/MTU change ({'; '.join(settings)}) of",
                    refused=f"apply {'; '.join(settings)} to",
                )
            except BaseException:
                self._rollback(conn, plan, spec)
                raise
        log.info(
            "claimed prepared port %s, device_id=%s pod=%s%s",
            plan.name,
            spec.device_id,
            spec.owner.pod,
            f" changed {'; '.join(settings)}" if settings else "",
            extra={"device_id": spec.device_id, "port": plan.name},
        )
        claimed = replace(_ports.plugged_from_tags(plan.name, plan.bridge, port_ids),
                          claimed=True)
        if spec.kind == "memif":
            return self._refresh_memif_queues(conn, spec, plan, claimed)
        return claimed

    @staticmethod
    def _stale(spec: PortSpec, plan: _ports.PortPlan, plugged: PluggedPort,
               ids: dict[str, str]) -> str:
        """Why an unprepared port cannot be this spec's as it is ("" when it is): another
        owner, other settings."""
        if plugged.owner != spec.owner:
            owner = plugged.owner
            return (f"owner {owner.pod},{owner.container_id[:12]},{owner.ifname}")
        differences = _ports.spec_differences(plan, ids)
        if plugged.network != plan.bridge:
            differences.append(f"bridge: {plugged.network!r} -> {plan.bridge!r}")
        return "; ".join(differences)

    def _replug(
        self,
        conn: Connection,
        spec: PortSpec,
        plan: _ports.PortPlan,
        plugged: PluggedPort,
        ids: dict[str, str],
    ) -> PluggedPort:
        _committed(spec)
        if plugged.owner != spec.owner:
            raise VSwitchError(
                f"device_id={spec.device_id} is already plugged for pod="
                f"{plugged.owner.pod_namespace}/{plugged.owner.pod_name} container="
                f"{plugged.owner.container_id[:12]} ifname={plugged.owner.ifname}; refusing it for "
                f"{_describe(spec)}: unplug it first (CNI DEL of the old attachment)"
            )
        differences = _ports.spec_differences(plan, ids)
        if differences or plugged.network != plan.bridge:
            if plugged.network != plan.bridge:
                differences.append(f"bridge: {plugged.network!r} -> {plan.bridge!r}")
            raise VSwitchError(
                f"{_describe(spec)} is already plugged as port {plan.name} with other settings "
                f"({'; '.join(differences)}): unplug it first"
            )
        log.info(
            "port %s already plugged, device_id=%s pod=%s",
            plan.name,
            spec.device_id,
            spec.owner.pod,
        )
        if spec.kind == "memif":
            return self._refresh_memif_queues(conn, spec, plan, plugged)
        return plugged

    def _refresh_memif_queues(
        self, conn: Connection, spec: PortSpec, plan: _ports.PortPlan, plugged: PluggedPort
    ) -> PluggedPort:
        """A kept memif port gets the queue count of the PMD threads OVS runs now.

        pmd-cpu-mask may have changed since the first plug (the agent replays after it);
        the PMDs then send on queues the container never opened unless n_rxq and the tag
        the container reads follow it.
        """
        pairs = _ports.memif_queue_pairs(self._other_config(conn, "pmd-cpu-mask"))
        tagged = plugged.tags.get(TAG_MEMIF_QUEUES)
        if tagged == str(pairs):
            return plugged
        results, next_cfg = self._commit(
            conn,
            f"memif queue update of {_describe(spec)} port {plan.name}",
            SetMemifQueues(conn.api, plan.name, pairs),
        )
        if not results[0]:
            raise VSwitchError(
                f"port {plan.name} of {_describe(spec)} vanished from OVS while its memif "
                "queues were updated (removed outside numanet?): plug it again"
            )
        self._check_applied(
            conn,
            plan,
            next_cfg,
            spec,
            action=f"the memif queue update (n_rxq={pairs}) of",
            refused=f"apply n_rxq={pairs} to",
            aftermath=f"the database keeps n_rxq={pairs}",
        )
        log.info(
            "memif queues of port %s changed %s -> %d, device_id=%s pod=%s",
            plan.name,
            tagged or "-",
            pairs,
            spec.device_id,
            spec.owner.pod,
            extra={"device_id": spec.device_id, "port": plan.name},
        )
        return replace(plugged, tags={**plugged.tags, TAG_MEMIF_QUEUES: str(pairs)})

    def _check_applied(
        self,
        conn: Connection,
        plan: _ports.PortPlan,
        next_cfg: int | None,
        spec: PortSpec,
        *,
        action: str = "the plug of",
        refused: str = "create",
        aftermath: str = "the port was removed again",
    ) -> None:
        """Wait for vswitchd to apply the port; raise when it refused it or is not there.

        ``action``/``refused`` name the change in the timeout/error message, ``aftermath``
        what the caller did about it.
        """

        def outcome(tables: Any) -> tuple[str, str] | None:
            rows = list(tables["Open_vSwitch"].rows.values())
            if not rows or next_cfg is None or rows[0].cur_cfg < next_cfg:
                down = self.vswitchd_down()
                return ("down", down) if down else None
            return _interface_outcome(tables, plan.name)

        result = conn.wait_for(outcome, self.timeout)
        if result is not None and result[0] == "down":
            raise VSwitchUnavailable(
                f"ovs-vswitchd is not running ({result[1]}), so it cannot apply {action} "
                f"{_describe(spec)} port {plan.name}; {aftermath}"
            )
        if result is None:
            raise VSwitchUnavailable(
                f"ovs-vswitchd did not apply {action} {_describe(spec)} port {plan.name} "
                f"within {self.timeout:g} s (database {self.db}): check that ovs-vswitchd runs; "
                f"{aftermath}"
            )
        status, detail = result
        if status != "ok":
            raise VSwitchError(
                f"OVS could not {refused} port {plan.name} ({plan.iface_type}) for "
                f"{_describe(spec)}: {detail}; {aftermath}"
            )

    @staticmethod
    def _other_config(conn: Connection, key: str) -> str | None:
        def read(tables: Any) -> str | None:
            rows = list(tables["Open_vSwitch"].rows.values())
            return rows[0].other_config.get(key) if rows else None

        return conn.read(read)

    def _vhost_dir(self, conn: Connection) -> str:
        base = self._vhost_sock_dir
        if base is None:
            base = os.path.dirname(self.db[len("unix:") :]) if self.db.startswith("unix:") else ""

        sub = "" if self._vhost_sock_dir is not None else self._other_config(conn, "vhost-sock-dir")
        return os.path.join(base, sub) if sub else base

    def _link_vhost_socket(self, conn: Connection, plan: _ports.PortPlan) -> None:
        """Make the socket OVS serves appear in the slot: a hard link of the same inode.

        connect() only needs the inode, so a hard link in the slot directory (which the
        container mounts) reaches OVS; it must be on the same filesystem as OVS's run dir.
        """
        assert plan.link_socket_to is not None
        source = os.path.join(self._vhost_dir(conn), plan.name)
        target = plan.link_socket_to
        try:
            if not stat.S_ISSOCK(os.stat(source).st_mode):
                raise VSwitchError(f"{source} is not a socket")
        except FileNotFoundError as exc:
            raise VSwitchError(
                f"OVS created no vhost-user socket at {source} for port {plan.name} "
                f"device_id={plan.device_id}: pass vhost_sock_dir (OVS run dir + "
                "other_config:vhost-sock-dir) to the OVS backend"
            ) from exc
        self._remove_stale_socket(target, plan)
        try:
            os.link(source, target)
        except OSError as exc:
            hint = (
                " (OVS's run dir and the slot directory are on different filesystems: put "
                "them on one, or use vhost-user mode server)"
                if exc.errno == 18
                else ""
            )
            raise VSwitchError(
                f"cannot link OVS socket {source} to {target} for device_id={plan.device_id}: "
                f"{exc}{hint}"
            ) from exc

    @staticmethod
    def _remove_stale_socket(path: str, plan: _ports.PortPlan) -> None:
        try:
            remove_socket_file(path, refuse_other=True)
        except NotASocket as exc:
            raise VSwitchError(
                f"{path} exists and is not a socket; refusing to replace it for "
                f"device_id={plan.device_id}"
            ) from exc

    def _rollback(self, conn: Connection, plan: _ports.PortPlan, spec: PortSpec) -> None:
        try:
            self._commit(conn, f"rollback of port {plan.name}", UnplugPort(conn.api, plan.name))
        except VSwitchError as exc:
            log.error(
                "could not roll back port %s, device_id=%s pod=%s: %s",
                plan.name,
                spec.device_id,
                spec.owner.pod,
                exc,
            )
            return
        self._remove_socket_files(
            plan.port_external_ids, plan.vswitch_serves_socket, plan.link_socket_to is not None
        )
        log.warning(
            "rolled back port %s, device_id=%s pod=%s",
            plan.name,
            spec.device_id,
            spec.owner.pod,
        )

    @staticmethod
    def _remove_socket_files(ids: dict[str, str], vswitch_serves: bool, linked: bool) -> None:
        """Remove a socket numanet linked, or one DPDK created and left behind."""
        path = ids.get(_ports.TAG_SOCKET_PATH)
        if path and (vswitch_serves or linked):
            remove_socket_file(path)

    def unplug(self, device_id: str) -> bool:
        if not isinstance(device_id, str) or not device_id:
            raise VSwitchError(f"device ID {device_id!r} is empty or not a string")
        conn = self._connection()
        existing = self._plugged(conn, device_id)
        if existing is None:
            log.info("no port to unplug, device_id=%s", device_id)
            return False
        return self._remove(conn, device_id, *existing, settle_later=True)

    def _remove(
        self, conn: Connection, device_id: str, plugged: PluggedPort, ids: dict[str, str],
        *, settle_later: bool = False,
    ) -> bool:
        """Remove the port in one transaction and the socket files it leaves, then wait for
        ovs-vswitchd to apply it (DPDK closes the socket); with ``settle_later`` the wait
        is in the background, and the device's next plug waits for it instead.

        The files may go before vswitchd applied the removal: a socket's name is not what
        holds its connections, and no new socket can appear at the path before the next
        plug of the device, which waits for the removal to settle."""
        results, next_cfg = self._commit(
            conn,
            f"unplug of device_id={device_id} port {plugged.port_name}",
            UnplugPort(conn.api, plugged.port_name),
        )
        role = ids.get(_ports.TAG_CONTAINER_ROLE, "")
        kind = ids.get(_ports.TAG_KIND, "")
        linked = kind == "vhost-user" and role == "client"
        serves = kind == "memif" and role in ("slave", "client")
        self._remove_socket_files(ids, serves, linked)
        removal = _Removal(device_id, plugged, ids, next_cfg)
        if settle_later and next_cfg is not None:
            self._settler.add(removal)
        else:
            self._settle(conn, removal, self.timeout)
        return bool(results[0])

    def _settle(self, conn: Connection, removal: _Removal, timeout: float) -> None:
        """Wait (up to ``timeout``) until ovs-vswitchd applied the removal. A stopped
        vswitchd does not make the port come back (and its sockets are closed), so a
        timeout is only logged."""
        plugged, device_id = removal.plugged, removal.device_id
        if not self._wait_applied(conn, removal.next_cfg, timeout):
            down = self.vswitchd_down()
            if down is None:
                log.warning(
                    "ovs-vswitchd did not confirm the unplug of port %s device_id=%s within %gs",
                    plugged.port_name,
                    device_id,
                    timeout,
                )
        log.info(
            "unplugged %sport %s, device_id=%s pod=%s",
            "prepared " if plugged.prepared else "",
            plugged.port_name,
            device_id,
            plugged.owner.pod,
            extra={"device_id": device_id, "port": plugged.port_name},
        )

    # -- health and placement --------------------------------------------------------------

    def health(self) -> Health:
        try:
            conn = self._connection()
        except VSwitchUnavailable as exc:
            return Health(False, str(exc))
        down = self.vswitchd_down()
        if down is not None:
            return Health(False, f"ovs-vswitchd is not running: {down}")

        def state(tables: Any) -> tuple[bool, int, int] | None:
            rows = list(tables["Open_vSwitch"].rows.values())
            if not rows:
                return None
            row = rows[0]
            return bool(row.dpdk_initialized), row.cur_cfg, row.next_cfg

        facts = conn.read(state)
        if facts is None:
            return Health(
                False, f"database {self.db} has no Open_vSwitch row: run 'ovs-vsctl init'"
            )
        if not facts[0]:
            return Health(
                False,
                "DPDK is not initialised in ovs-vswitchd: set other_config:dpdk-init=true "
                "and (re)start ovs-vswitchd-dpdk",
            )
        # dpdk_initialized stays true after vswitchd died. Ask vswitchd itself: over its
        # control socket when the watch holds one (its main loop answers; no database
        # write, no reconfiguration of every bridge at every probe) ...
        watch = self._watch
        probe = min(self.timeout, _HEALTH_PROBE_TIMEOUT)
        answered = watch.ping(probe) if watch is not None else None
        if answered is True:
            return Health(True)
        if answered is False:
            down = self.vswitchd_down()
            return Health(False, f"ovs-vswitchd is not running: {down}" if down else
                          f"ovs-vswitchd did not answer on its control socket "
                          f"{watch.ctl_path if watch else ''} within {probe:g} s: it is stuck "
                          "or overloaded")
        # ... else to acknowledge a no-op change through cur_cfg.
        try:
            _, next_cfg = self._commit(conn, "health probe", Probe(conn.api))
        except VSwitchError as exc:
            return Health(False, str(exc))
        if not self._wait_applied(conn, next_cfg, probe):
            return Health(
                False,
                f"ovs-vswitchd did not answer within {probe:g} s (next_cfg={next_cfg}, "
                f"cur_cfg={facts[1]}): check that ovs-vswitchd runs against {self.db}",
            )
        return Health(True)

    def poll_numa_nodes(self, topology: CpuTopology) -> frozenset[int] | None:
        """NUMA nodes of the PMD cores: ``other_config:pmd-cpu-mask`` through ``topology``.

        With no pmd-cpu-mask, OVS starts one PMD thread on each NUMA node that has ports,
        so every node of the machine is returned. None when the database cannot be read
        or the mask cannot be parsed.
        """
        try:
            conn = self._connection()
        except VSwitchUnavailable:
            return None
        text = self._other_config(conn, "pmd-cpu-mask")
        if not text:
            return frozenset(topology.node_ids)
        try:
            cpus = _ports.pmd_cpus(text)
        except ValueError as exc:
            log.warning("cannot use OVS's pmd-cpu-mask: %s", exc)
            return None
        return topology.nodes_of(cpus)

    # -- misc ------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"OvsVSwitch(db={self.db!r}, bridge={self.bridge!r})"


def _committed(spec: PortSpec) -> None:
    """Tell the caller (``PortSpec.on_committed``), once."""
    if spec.on_committed is not None:
        spec.on_committed()


@dataclass(eq=False)
class _Removal:
    """A port removed from the database, until ovs-vswitchd has applied it."""

    device_id: str
    plugged: PluggedPort
    ids: dict[str, str]
    next_cfg: int | None
    added: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)


class _Settler:
    """Settles removals in the background, oldest first (``cur_cfg`` only grows, so one
    wait covers every removal committed before it); ``wait`` lets a plug of the same
    device wait for its removal. The thread starts with the first removal and ends when
    there is none left."""

    def __init__(self, backend: OvsVSwitch) -> None:
        self._backend = backend
        self._lock = threading.Condition()
        self._pending: dict[str, _Removal] = {}
        self._thread: threading.Thread | None = None

    def add(self, removal: _Removal) -> None:
        with self._lock:
            self._pending[removal.device_id] = removal
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ovs-settle",
                                                daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def poke(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def wait(self, device_id: str, timeout: float) -> None:
        """Until the removal of ``device_id``'s port, if one is pending, has settled."""
        with self._lock:
            removal = self._pending.get(device_id)
        if removal is not None and not removal.done.wait(timeout + 1.0):
            log.warning("the removal of device_id=%s's earlier port has not settled within "
                        "%gs; plugging anyway", device_id, timeout)

    def drain(self, timeout: float) -> None:
        """Wait for every pending removal (the backend is closing)."""
        deadline = time.monotonic() + timeout + 1.0
        with self._lock:
            pending = list(self._pending.values())
        for removal in pending:
            removal.done.wait(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        backend = self._backend
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                oldest = min(self._pending.values(), key=lambda r: r.added)
            conn = backend._conn
            left = oldest.added + backend.timeout - time.monotonic()
            try:
                if conn is None:
                    raise VSwitchUnavailable("the backend was closed")
                backend._settle(conn, oldest, max(0.0, left))
            except Exception:  # noqa: BLE001 - the files stay; the removal itself stands
                log.exception("settling the unplug of device_id=%s failed", oldest.device_id)
            with self._lock:
                if self._pending.get(oldest.device_id) is oldest:
                    del self._pending[oldest.device_id]
            oldest.done.set()
