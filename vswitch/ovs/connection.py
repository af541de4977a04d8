"""One long-lived ovsdbapp connection to an Open_vSwitch database, per backend instance.

Three things ovsdbapp does not give out of the box, and why:

- ``ovsdbapp.backend.ovs_idl.Backend`` keeps its connection on the *class*, so a second
  backend (another database, a reconnect after ``close``) would silently reuse the first.
  ``_Api`` keeps it on the instance.
- ovsdbapp's vsctl-style transaction waits for ovs-vswitchd inside the connection thread
  and only logs failures; every other caller's transaction then waits too. ``_CfgTransaction``
  only bumps ``next_cfg`` and records the value; the calling thread waits (``wait_for``).
- ``from_server`` fetches the schema with a blocking call that has no timeout;
  ``_fetch_schema`` bounds it.

And what keeps a plug cheap in the agent's Python (measured with bench/bench_cni.py and
bench/profile_cni_add.py): only the columns numanet uses are monitored, messages are
parsed by the standard library's C decoder (``fastjson``) instead of python-ovs's
pure-Python fallback, no ``time.sleep(0)`` per updated row, and ``read_column`` reads a
committed column with one conversion instead of three.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ovs.db import idl as ovs_idl
from ovsdbapp.backend.ovs_idl import connection as ovsdbapp_connection
from ovsdbapp.backend.ovs_idl import idlutils, transaction
from ovsdbapp.schema.open_vswitch import impl_idl

from vswitch.ovs import fastjson

log = logging.getLogger(__name__)

SCHEMA_NAME = "Open_vSwitch"
# Only the columns numanet reads or writes. ovs-vswitchd rewrites Interface statistics,
# status and link state all the time; leaving them out of the monitor keeps those updates
# (and their parsing, in Python, under the GIL) away from the agent.
COLUMNS: dict[str, tuple[str, ...]] = {
    "Open_vSwitch": ("bridges", "cur_cfg", "next_cfg", "dpdk_initialized", "other_config",
                     "external_ids"),
    "Bridge": ("name", "ports", "datapath_type", "external_ids"),
    "Port": ("name", "interfaces", "tag", "external_ids"),
    "Interface": ("name", "type", "options", "mtu_request", "external_ids", "ofport", "error"),
}
TABLES = tuple(COLUMNS)
T = TypeVar("T")


class SchemaFetchError(RuntimeError):
    pass


def _fetch_schema(db: str, timeout: float) -> dict[str, Any]:
    """``get_schema`` over JSON-RPC with a deadline (unix: and tcp: remotes)."""
    if db.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(db[len("unix:") :])
        except OSError:
            sock.close()
            raise
    elif db.startswith("tcp:"):
        host, _, port = db[len("tcp:") :].rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    else:
        # ssl: and the rest: ovsdbapp's own (unbounded) fetch.
        result: dict[str, Any] = idlutils.fetch_schema_json(db, SCHEMA_NAME)
        return result
    deadline = time.monotonic() + timeout
    request = {"method": "get_schema", "params": [SCHEMA_NAME], "id": 0}
    decoder = json.JSONDecoder()
    with sock:
        sock.sendall(json.dumps(request).encode())
        buffer = ""
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                raise SchemaFetchError(f"{db} closed the connection before sending the schema")
            buffer += chunk.decode()
            try:
                reply, _ = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                continue  # not complete yet
            if reply.get("id") != 0:
                buffer = ""  # a notification or echo; the schema reply follows
                continue
            if reply.get("error"):
                raise SchemaFetchError(f"{db} refused get_schema: {reply['error']}")
            schema: dict[str, Any] = reply["result"]
            return schema


def read_column(row: Any, column: str) -> Any:
    """``getattr(row, column)``, converted once when the row has nothing pending.

    python-ovs's ``Row.__getattr__`` turns a map or set column into Python, back into a
    Datum (to merge a transaction's pending mutations) and into Python again: a port's
    external_ids cost about 30 us that way, paid for every port on every ``ports()``.
    Outside a transaction a row has no pending changes, so one conversion gives the same.
    Rows of a python-ovs whose internals differ take the ordinary way.
    """
    state = vars(row)
    data = state.get("_data")
    to_row = getattr(type(row), "_uuid_to_row", None)
    if data is not None and to_row is not None and "_changes" in state \
            and "_mutations" in state and not state["_changes"] and not state["_mutations"]:
        datum = data.get(column)
        if datum is not None:
            return datum.to_python(row._uuid_to_row)
    return getattr(row, column)


class _NotifyingIdl(ovsdbapp_connection.OvsdbIdl):  # type: ignore[misc]
    """Wakes threads in ``Connection.wait_for`` whenever a row changes."""

    def __init__(self, *args: Any, changed: threading.Condition, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changed = changed
        self.generation = 0

    def notify(self, event: Any, row: Any, updates: Any = None) -> None:
        with self._changed:
            self.generation += 1
            self._changed.notify_all()

    def cooperative_yield(self) -> None:
        # ovsdbapp's time.sleep(0) per updated row is for green threads; with OS threads
        # it only hands the GIL away in the middle of applying an update.
        pass


class _CfgTransaction(transaction.Transaction):  # type: ignore[misc]
    """Bumps ``Open_vSwitch.next_cfg`` in the same transaction; ``next_cfg`` is the new value.

    ovs-vswitchd copies next_cfg to cur_cfg once it has applied everything up to it: the
    caller waits for that outside the connection thread. A transaction made with
    ``bump_cfg=False`` changes only what vswitchd does not act on, so it asks for nothing
    to wait for (``next_cfg`` stays None).
    """

    next_cfg: int | None = None

    def __init__(self, *args: Any, bump_cfg: bool = True) -> None:
        super().__init__(*args)
        self.bump_cfg = bump_cfg

    def pre_commit(self, txn: Any) -> None:
        if not self.api._tables["Open_vSwitch"].rows:
            raise RuntimeError("the database has no Open_vSwitch row: run 'ovs-vsctl init'")
        if self.bump_cfg:
            self.api._ovs.increment("next_cfg")

    def post_commit(self, txn: Any) -> None:
        super().post_commit(txn)
        if self.bump_cfg:
            self.next_cfg = txn.get_increment_new_value()


class _Api(impl_idl.OvsdbIdl):  # type: ignore[misc]
    """ovsdbapp's Open_vSwitch API with the connection held per instance."""

    def __init__(self, conn: Any) -> None:
        self._instance_connection = conn
        super().__init__(conn)

    @property
    def ovsdb_connection(self) -> Any:
        return self._instance_connection

    @ovsdb_connection.setter
    def ovsdb_connection(self, conn: Any) -> None:
        self._instance_connection = conn

    def create_transaction(
        self, check_error: bool = False, log_errors: bool = True, bump_cfg: bool = True,
        **kwargs: Any
    ) -> _CfgTransaction:
        return _CfgTransaction(
            self, self.ovsdb_connection, self.ovsdb_connection.timeout, check_error, log_errors,
            bump_cfg=bump_cfg,
        )


class Connection:
    """An ovsdbapp API bound to one database, plus a way to wait for row changes."""

    def __init__(self, db: str, timeout: float) -> None:
        self.db = db
        self.timeout = timeout
        self._changed = threading.Condition()
        fastjson.install()
        schema = _fetch_schema(db, timeout)
        helper = ovs_idl.SchemaHelper(None, schema)
        for table, columns in COLUMNS.items():
            helper.register_columns(table, list(columns))
        self._idl = _NotifyingIdl(db, helper, changed=self._changed)
        self._conn = ovsdbapp_connection.Connection(self._idl, timeout)
        self.api = _Api(self._conn)  # starts the connection thread after the first sync

    @property
    def lock(self) -> Any:
        """Held by the connection thread while it changes the in-memory rows."""
        return self._conn.lock

    @property
    def idl(self) -> Any:
        return self._idl

    def is_connected(self) -> bool:
        session = getattr(self._idl, "_session", None)
        return bool(session is not None and session.is_connected())

    def read(self, reader: Callable[[Any], T]) -> T:
        """Run ``reader(tables)`` on a consistent view of the rows."""
        with self._conn.lock:
            return reader(self._idl.tables)

    def wait_for(self, predicate: Callable[[Any], T], timeout: float) -> T | None:
        """Wait until ``predicate(tables)`` is truthy; its value, or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            # Take the generation before looking, so a change in between is not missed.
            with self._changed:
                generation = self._idl.generation
            value = self.read(predicate)
            if value:
                return value
            with self._changed:
                while self._idl.generation == generation:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._changed.wait(remaining)

    def poke(self) -> None:
        """Wake every ``wait_for`` to look again (something its predicate reads outside
        the rows changed)."""
        with self._changed:
            self._idl.generation += 1
            self._changed.notify_all()

    def close(self) -> None:
        if not self._conn.stop(timeout=self.timeout):
            log.warning("ovsdb connection thread did not stop db=%s", self.db)
