"""The CNI service inside the agent: a unix socket the ``numanet-cni`` shim talks to.

Wire format (one call per connection, see ``cni.shim``): ``numanet-cni 1\n``, the CNI
variables as ``KEY=VALUE\0``, an empty ``\0``, then stdin until the shim half-closes; the
answer is ``<exit code>\n`` and the stdout text. Calls run in their own threads, so ADDs
of different pods proceed in parallel (the verbs lock per device ID).

The socket is created under a temporary name, set to 0600 and then renamed into place,
so it is never reachable with looser permissions; peers that are not root (or the
agent's own user) are refused by their credentials as well.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from cni import errors, metrics
from cni.commands import VERBS, Allocations, Context
from cni.container_config import DEVINFO_ROOT
from cni.errors import CniError
from cni.netconf import cni_version_of
from cni.podresources import PodResourcesClient
from cni.request import COMMANDS, ENV_NAMES, parse_request
from cni.shim import MAGIC
from deviceplugin import naming
from deviceplugin.slots import SlotLookup
from vswitch.api import VSwitch

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 2 << 20
_READ_TIMEOUT = 10.0
_UCRED = struct.Struct("3i")


def run_call(env: Mapping[str, str], stdin: bytes, ctx: Context) -> tuple[int, str]:
    """One CNI call: (exit code, stdout). Never raises; a bug becomes CNI error 199."""
    started = time.monotonic()
    version = cni_version_of(stdin)
    command = str(env.get("CNI_COMMAND", ""))[:16]
    who = _who(env, stdin)
    code = errors.INTERNAL_ERROR
    try:
        req = parse_request(env, stdin)
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
        metrics.observe_cni_call(command if command in COMMANDS else "invalid", code,
                                 time.monotonic() - started)


def _who(env: Mapping[str, str], stdin: bytes = b"") -> str:
    """device_id=, pod=, container=, ifname= of a call for log lines, from values not yet
    validated (so repr'd: a newline in CNI_ARGS must not forge a log line)."""
    args = dict(item.partition("=")[::2] for item in env.get("CNI_ARGS", "").split(";"))
    pod = f"{args.get('K8S_POD_NAMESPACE', '')}/{args.get('K8S_POD_NAME', '')}"
    pod = "-" if pod == "/" else pod  # the runtime named none (a DEL may not)
    return (f"device_id={_device_id_of(stdin)[:64]!r} pod={pod[:130]!r} "
            f"container={env.get('CNI_CONTAINERID', '')[:12]!r} "
            f"ifname={env.get('CNI_IFNAME', '')[:16]!r}")


def _device_id_of(stdin: bytes) -> str:
    """The device ID a network config names (deviceID or runtimeConfig.deviceID), best
    effort: '-' when it names none or cannot be read."""
    try:
        doc = json.loads(stdin)
    except (ValueError, UnicodeDecodeError):
        return "-"
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
                        allocations: Allocations | None = None) -> CniService:
    """The CNI service as the agent runs it, listening on ``<run-dir>/cni.sock``; its
    ``stop`` also closes the kubelet client and the worker threads."""
    pod_resources = PodResourcesClient(pod_resources_socket)
    pod_resources.connect()  # in the background: the first ADD must not pay for it
    context = Context(slots=slots, vswitches=LiveVSwitches(vswitches),
                      pod_resources=pod_resources, run_dir=run_dir,
                      devinfo_root=devinfo_root, allocations=allocations)
    return CniService(naming.cni_socket(run_dir), context, close_context=True).start()


class CniService:
    """Serves CNI calls on ``socket_path`` until ``stop``; use as a context manager."""

    def __init__(self, socket_path: Path, context: Context,
                 call: Callable[[Mapping[str, str], bytes, Context], tuple[int, str]] = run_call,
                 close_context: bool = False) -> None:
        self.socket_path = Path(socket_path)
        self.context = context
        self._close_context = close_context
        self._call = call
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._inode: int | None = None
        self._active: set[threading.Thread] = set()
        self._active_lock = threading.Lock()

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
            active = list(self._active)
        for thread in active:
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
            thread = threading.Thread(target=self._serve, args=(conn,), name="cni-call",
                                      daemon=True)
            with self._active_lock:
                self._active.add(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                if not self._peer_allowed(conn):
                    return
                conn.settimeout(_READ_TIMEOUT)
                env: dict[str, str] = {}
                stdin = b""
                try:
                    raw = self._read_all(conn)
                    env, stdin = decode_call(raw)
                    code, out = self._call(env, stdin, self.context)
                except CniError as exc:
                    code, out = 1, exc.to_json("1.1.0")
                except TimeoutError:
                    log.warning("CNI shim sent no complete request within %.0f s", _READ_TIMEOUT)
                    return
                conn.settimeout(None)
                try:
                    conn.sendall(f"{code}\n{out}".encode())
                except OSError as exc:
                    # The shim gave up (runtime timeout): the call's effects stand; the
                    # runtime's DEL or GC will undo them.
                    log.warning("CNI shim went away before the answer %s error=%s",
                                _who(env, stdin), exc)
        finally:
            with self._active_lock:
                self._active.discard(threading.current_thread())

    @staticmethod
    def _read_all(conn: socket.socket) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_REQUEST_BYTES:
                raise CniError(errors.DECODE_FAILURE, f"CNI request larger than {MAX_REQUEST_BYTES}"
                               " bytes", "the network configuration is far too large")
            chunks.append(chunk)

    @staticmethod
    def _peer_allowed(conn: socket.socket) -> bool:
        _, uid, _ = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  _UCRED.size))
        if uid in (0, os.getuid()):
            return True
        log.warning("CNI call refused from uid=%d: only root may call the CNI service", uid)
        return False
