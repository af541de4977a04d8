"""The CNI service inside the agent: a unix socket the ``numanet-cni`` shim talks to.

Wire format (one call per connection, see ``cni.shim``): ``numanet-cni 1\n``, the CNI
variables as ``KEY=VALUE\0``, an empty ``\0``, then stdin until the shim half-closes; the
answer is ``<exit code>\n`` and the stdout text. Calls run in worker threads, so ADDs of
different pods proceed in parallel (the verbs lock per device ID). The workers stay for
the next calls (a few spare ones, ``SPARE_WORKERS``, for good; more for
``WORKER_IDLE_S`` after a burst): a call handed to a waiting worker starts with one
thread wake-up instead of a thread's creation and start, which on a busy node costs
milliseconds.

Bounds, so that no caller can hold the agent: the whole request must arrive within
``CALL_READ_DEADLINE`` seconds of the accept (not per read: a client sending a byte now
and then is cut off too); at most ``MAX_CONNECTIONS`` calls are served at once, and a
connection past that is answered CNI error 11 (try again later) at once, without a
thread; a request over ``MAX_REQUEST_BYTES`` is read to its end and thrown away (an old
shim reads the answer only once it has sent everything), then answered error 6.

The socket is created under a temporary name, set to 0600 and then renamed into place,
so it is never reachable with looser permissions; peers that are not root (or the
agent's own user) are refused by their credentials as well.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cni import errors, metrics
from cni.commands import VERBS, Allocations, Context
from cni.container_config import DEVINFO_ROOT
from cni.context import not_known_down
from cni.errors import CniError
from cni.netconf import SPEC_VERSION, read_document, version_of
from cni.podresources import PodResourcesClient
from cni.request import COMMANDS, ENV_NAMES, parse_request
from cni.shim import MAGIC
from deviceplugin import naming
from deviceplugin.slots import SlotLookup
from vswitch.api import VSwitch

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 2 << 20
CALL_READ_DEADLINE = 10.0
MAX_CONNECTIONS = 64
SPARE_WORKERS = 4
WORKER_IDLE_S = 60.0
# How long an answer may take to leave (it is small: it waits only for a peer that never reads).
_SEND_TIMEOUT = 10.0
# An oversize request is thrown away up to this much; past it the connection is closed.
_DISCARD_LIMIT = 64 << 20
# A warning about refused connections at most this often (a burst must not flood the log).
_REFUSAL_LOG_INTERVAL = 10.0
_UCRED = struct.Struct("3i")


def run_call(env: Mapping[str, str], stdin: bytes, ctx: Context) -> tuple[int, str]:
    """One CNI call: (exit code, stdout). Never raises; a bug becomes CNI error 199."""
    started = time.monotonic()
    raw_command = str(env.get("CNI_COMMAND", ""))
    # Anything but a CNI command is shown repr'd: a newline in it must not forge a log line.
    command = raw_command if raw_command in COMMANDS else repr(raw_command[:16])
    version, who = SPEC_VERSION, "-"
    code = errors.INTERNAL_ERROR
    try:
        document = read_document(stdin)  # the one decode of stdin for this call
        version = version_of(document)
        who = _who(env, document)
        req = parse_request(env, stdin, document)
        out = VERBS[req.command](req, ctx)
        code = 0
        log.debug("CNI %s ok %s ms=%.1f", command, who, (time.monotonic() - started) * 1000)
        return 0, out
    except CniError as exc:
        code = exc.code
        log.warning("CNI %s failed %s code=%d msg=%s", command, who, exc.code, exc.msg)
        return 1, exc.to_json(version)
    except Exception as exc:  # noqa: BLE001 - the caller must get a CNI error, not a hang
        log.exception("CNI %s crashed %s", command, who)
        bug = CniError(errors.INTERNAL_ERROR,
                       f"internal error in the numanet agent: {type(exc).__name__}: {exc}",
                       "this is a numanet bug; the agent log has the traceback")
        return 1, bug.to_json(version)
    finally:
        # The label comes from outside: anything but a CNI command counts as "invalid",
        # so a caller cannot grow the metric's series without bound.
        metrics.observe_cni_call(raw_command if raw_command in COMMANDS else "invalid", code,
                                 time.monotonic() - started)


def _who(env: Mapping[str, str], document: dict[str, Any] | CniError | None = None) -> str:
    """device_id=, pod=, container=, ifname= of a call for log lines, from values not yet
    validated (so repr'd: a newline in CNI_ARGS must not forge a log line)."""
    args = dict(item.partition("=")[::2] for item in env.get("CNI_ARGS", "").split(";"))
    pod = f"{args.get('K8S_POD_NAMESPACE', '')}/{args.get('K8S_POD_NAME', '')}"
    pod = "-" if pod == "/" else pod  # the runtime named none (a DEL may not)
    return (f"device_id={_device_id_of(document)[:64]!r} pod={pod[:130]!r} "
            f"container={env.get('CNI_CONTAINERID', '')[:12]!r} "
            f"ifname={env.get('CNI_IFNAME', '')[:16]!r}")


def _device_id_of(doc: dict[str, Any] | CniError | None) -> str:
    """The device ID a network config names (deviceID or runtimeConfig.deviceID), best
    effort: '-' when it names none or cannot be read."""
    if not isinstance(doc, dict):
        return "-"
    runtime = doc.get("runtimeConfig")
    found = doc.get("deviceID") or (runtime.get("deviceID") if isinstance(runtime, dict) else None)
    return found if isinstance(found, str) and found else "-"


def decode_call(raw: bytes) -> tuple[dict[str, str], bytes]:
    """(CNI environment, stdin) from the shim's framing; CniError(6) when it is not that."""
    if not raw.startswith(MAGIC):
        raise CniError(errors.DECODE_FAILURE, "the CNI shim sent a request numanet cannot read",
                       "the shim (/opt/cni/bin/numanet) and the agent must be the same numanet "
                       "release")
    env: dict[str, str] = {}
    pos = len(MAGIC)
    while True:
        end = raw.find(b"\0", pos)
        if end < 0:
            raise CniError(errors.DECODE_FAILURE, "the CNI shim's request ends inside its "
                           "environment block", "the shim was interrupted; the runtime retries")
        entry = raw[pos:end]
        pos = end + 1
        if not entry:
            break
        key, sep, value = entry.decode("utf-8", "surrogateescape").partition("=")
        if not sep or key not in ENV_NAMES or key in env:
            raise CniError(errors.DECODE_FAILURE, f"the CNI shim sent a bad variable {key[:40]!r}",
                           "only the CNI_* variables are relayed, once each")
        env[key] = value
    return env, raw[pos:]


class LiveVSwitches(Mapping[str, VSwitch]):
    """A Mapping that asks ``source`` on every lookup: the agent replaces backends when
    its config changes, and the CNI verbs must always see the current ones."""

    def __init__(self, source: Callable[[], Mapping[str, VSwitch]]) -> None:
        self._source = source

    def __getitem__(self, name: str) -> VSwitch:
        return self._source()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._source()))

    def __len__(self) -> int:
        return len(self._source())


def start_agent_service(*, slots: SlotLookup, vswitches: Callable[[], Mapping[str, VSwitch]],
                        run_dir: Path, pod_resources_socket: Path,
                        devinfo_root: Path = DEVINFO_ROOT,
                        allocations: Allocations | None = None,
                        vswitch_down: Callable[[str], str | None] = not_known_down
                        ) -> CniService:
    """The CNI service as the agent runs it, listening on ``<run-dir>/cni.sock``; its
    ``stop`` also closes the kubelet client and the worker threads. ``vswitch_down``:
    why a vSwitch is down, as the agent's monitor last found it (``Context``)."""
    pod_resources = PodResourcesClient(pod_resources_socket)
    pod_resources.connect()  # in the background: the first ADD must not pay for it
    context = Context(slots=slots, vswitches=LiveVSwitches(vswitches),
                      pod_resources=pod_resources, run_dir=run_dir,
                      devinfo_root=devinfo_root, allocations=allocations,
                      vswitch_down=vswitch_down)
    return CniService(naming.cni_socket(run_dir), context, close_context=True).start()


class CniService:
    """Serves CNI calls on ``socket_path`` until ``stop``; use as a context manager."""

    def __init__(self, socket_path: Path, context: Context,
                 call: Callable[[Mapping[str, str], bytes, Context], tuple[int, str]] = run_call,
                 close_context: bool = False, *, read_deadline: float = CALL_READ_DEADLINE,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.socket_path = Path(socket_path)
        self.context = context
        self._close_context = close_context
        self._call = call
        # Seconds the whole request may take to arrive; calls served at once (both read
        # per connection, so a test may lower them on a running service).
        self.read_deadline = read_deadline
        self.max_connections = max_connections
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._inode: int | None = None
        # Calls taken and not yet answered (queued for a worker or being served).
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        self._calls: queue.SimpleQueue[tuple[socket.socket, float] | None] = \
            queue.SimpleQueue()
        self._workers: set[threading.Thread] = set()
        self._idle = 0  # workers waiting for a call and not promised one
        self._refused = 0  # connections refused since the last warning about it
        self._refusal_logged = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> CniService:
        path = self.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._refuse_live_socket(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            if tmp.exists():
                tmp.unlink()
            sock.bind(str(tmp))
            os.chmod(tmp, 0o600)
            sock.listen(128)
            os.replace(tmp, path)
        except BaseException:
            sock.close()
            if tmp.exists():
                tmp.unlink()
            raise
        self._inode = os.stat(path).st_ino
        self._sock = sock
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="cni-service", daemon=True)
        self._thread.start()
        log.info("CNI service listening socket=%s", path)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let running calls finish (up to ``timeout``), remove the socket."""
        self._stopping.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        deadline = time.monotonic() + timeout
        with self._active_lock:
            workers = list(self._workers)
        for _ in workers:
            self._calls.put(None)  # after the calls already queued: they are served
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            # Only our own socket: a newer agent may already have replaced it.
            if self._inode is not None and os.stat(self.socket_path).st_ino == self._inode:
                self.socket_path.unlink()
        except FileNotFoundError:
            pass
        if self._close_context:
            self.context.close()
        log.info("CNI service stopped socket=%s", self.socket_path)

    def __enter__(self) -> CniService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _refuse_live_socket(path: Path) -> None:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise RuntimeError(f"{path} exists and is not a socket: remove it or change --run-dir")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(path))
        except OSError:
            path.unlink()  # left behind by an agent that died: ours to replace
            return
        finally:
            probe.close()
        raise RuntimeError(f"another agent is serving {path}: stop it first")

    # -- serving ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            sock = self._sock
            if sock is None:
                return
            try:
                conn, _ = sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("CNI service accept failed socket=%s", self.socket_path)
                time.sleep(0.1)
                continue
            try:
                self._dispatch(conn)
            except Exception:  # noqa: BLE001 - the accept loop must outlive any one call
                log.exception("CNI service could not take a call socket=%s", self.socket_path)
                conn.close()

    def _dispatch(self, conn: socket.socket) -> None:
        """The call to a waiting worker (a new one when none waits), or error 11 at once
        past ``max_connections``."""
        accepted = time.monotonic()
        with self._active_lock:
            busy = len(self._active) >= self.max_connections
            spawn = False
            if not busy:
                self._active.add(conn)
                spawn = self._idle == 0
                if not spawn:
                    self._idle -= 1  # promised this call
        if busy:
            self._refuse_busy(conn, f"is serving {self.max_connections} CNI calls already, "
                                    "its limit")
            return
        if spawn:
            thread = threading.Thread(target=self._work, name="cni-call", daemon=True)
            with self._active_lock:
                self._workers.add(thread)
            try:
                thread.start()
            except BaseException:  # no thread to be had (RuntimeError)
                with self._active_lock:
                    self._workers.discard(thread)
                    self._active.discard(conn)
                self._refuse_busy(conn, "cannot start a thread for another CNI call")
                raise
        self._calls.put((conn, accepted))

    def _work(self) -> None:
        """A worker: serve calls from the queue; leave on None (stop), or after
        ``WORKER_IDLE_S`` without a call while more than ``SPARE_WORKERS`` wait."""
        me = threading.current_thread()
        try:
            while True:
                try:
                    item = self._calls.get(timeout=WORKER_IDLE_S)
                except queue.Empty:
                    with self._active_lock:
                        if self._idle > SPARE_WORKERS:
                            self._idle -= 1
                            return
                    continue
                if item is None:
                    return
                conn, accepted = item
                try:
                    self._serve(conn, accepted)
                except BaseException:
                    with self._active_lock:  # this worker ends here; it waits for nothing
                        self._active.discard(conn)
                    raise
                with self._active_lock:
                    self._active.discard(conn)
                    self._idle += 1
        finally:
            with self._active_lock:
                self._workers.discard(me)

    def _refuse_busy(self, conn: socket.socket, why: str) -> None:
        """Answer error 11 on the accept thread: the request is not read, and the answer is
        small enough never to block."""
        with conn:
            try:
                if self._peer(conn) is None:
                    return
            except OSError:
                return
            busy = CniError(errors.TRY_AGAIN_LATER, f"the numanet agent {why}",
                            "the runtime retries; if this lasts, look in the agent log for "
                            "callers that hold connections open without sending a request")
            try:
                conn.setblocking(False)
                conn.send(f"1\n{busy.to_json(SPEC_VERSION)}".encode())
                # What already arrived of the request is read (a little, never waiting):
                # closing on unread data makes the caller's read fail after the answer, and
                # older shims then report "answered badly" instead of it.
                for _ in range(4):
                    if not conn.recv(65536):
                        break
            except OSError:
                pass
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= _REFUSAL_LOG_INTERVAL:
            log.warning("CNI calls refused, %d served at once already: refused=%d socket=%s",
                        self.max_connections, self._refused, self.socket_path)
            self._refused, self._refusal_logged = 0, now

    def _serve(self, conn: socket.socket, accepted: float) -> None:
        with conn:
            try:
                pid = self._peer(conn)
            except OSError as exc:
                log.warning("CNI caller went away before its call error=%s", exc)
                return
            if pid is None:
                return
            env: dict[str, str] = {}
            stdin = b""
            try:
                raw = self._read_request(conn, accepted + self.read_deadline)
                env, stdin = decode_call(raw)
                code, out = self._call(env, stdin, self.context)
            except CniError as exc:
                code, out = 1, exc.to_json(SPEC_VERSION)
                if exc.code == errors.TRY_AGAIN_LATER:  # the deadline passed
                    log.warning("CNI request refused from pid=%d: %s", pid, exc.msg)
            except OSError as exc:
                log.warning("CNI shim went away during its request error=%s", exc)
                return
            except Exception as exc:  # noqa: BLE001 - a bug; the caller still gets an answer
                log.exception("CNI call crashed %s", _who(env, read_document(stdin)))
                code, out = 1, CniError(
                    errors.INTERNAL_ERROR,
                    f"internal error in the numanet agent: {type(exc).__name__}: {exc}",
                    "this is a numanet bug; the agent log has the traceback",
                ).to_json(SPEC_VERSION)
            try:
                conn.settimeout(_SEND_TIMEOUT)
                conn.sendall(f"{code}\n{out}".encode())
            except OSError as exc:
                # The shim gave up (runtime timeout): the call's effects stand; the
                # runtime's DEL or GC will undo them.
                log.warning("CNI shim went away before the answer %s error=%s",
                            _who(env, read_document(stdin)), exc)

    def _read_request(self, conn: socket.socket, deadline: float) -> bytes:
        """The request to its end (the shim half-closes), all of it by ``deadline``."""
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = self._recv(conn, deadline)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_REQUEST_BYTES:
                self._discard(conn, deadline, size)
                raise CniError(errors.DECODE_FAILURE, f"CNI request larger than {MAX_REQUEST_BYTES}"
                               " bytes", "the network configuration is far too large")
            chunks.append(chunk)

    def _recv(self, conn: socket.socket, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            conn.settimeout(remaining)
            return conn.recv(65536)
        except TimeoutError:
            raise CniError(errors.TRY_AGAIN_LATER,
                           f"the CNI request did not arrive complete within "
                           f"{self.read_deadline:g} s",
                           "the caller sent it too slowly or did not close its end (the numanet "
                           "shim sends it at once); the runtime retries") from None

    def _discard(self, conn: socket.socket, deadline: float, size: int) -> None:
        """Read the rest of an oversize request and drop it, so that a shim still sending
        it (an old one reads the answer only once it is done) gets the answer."""
        try:
            while size <= _DISCARD_LIMIT:
                chunk = self._recv(conn, deadline)
                if not chunk:
                    return
                size += len(chunk)
        except (CniError, OSError):
            pass  # the answer is sent anyway; whoever still reads it gets it

    @staticmethod
    def _peer(conn: socket.socket) -> int | None:
        """The caller's pid when it may call (root or the agent's own user), else None."""
        pid, uid, _ = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    _UCRED.size))
        if uid in (0, os.getuid()):
            return pid
        log.warning("CNI call refused from uid=%d pid=%d: only root may call the CNI service",
                    uid, pid)
        return None
