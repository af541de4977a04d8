"""numanet-cni: the CNI executable (``/opt/cni/bin/numanet``), a thin relay to the agent.

The runtime (Multus) runs this once per CNI call. It forwards the CNI_* environment and
stdin to the numanet agent over ``/run/numanet/cni.sock`` (``NUMANET_CNI_SOCKET``
overrides), then prints the agent's stdout and exits with its code. VERSION is answered
here. If the agent cannot be reached the answer is CNI error 11 ("try again later")
naming the socket, and the runtime retries. A config larger than the agent takes
(``MAX_STDIN_BYTES``) is refused here with error 6 without reading the rest of it: it could
never succeed, and the runtime must not retry it.

``cni/relay.c`` is the same relay compiled (``cni.install`` installs it when it is built):
it must answer as this file does, and tests/cni/test_relay.py holds the two together.

Start-up time is paid by every pod network, so the way through imports only built-in
modules (``sys``, ``posix``, ``_socket``: not even ``os`` or ``json``), works on the raw
bytes environment, and talks a tiny binary framing instead of JSON. The file is
self-contained: ``cni.install`` installs it with its bytecode beside a launcher that runs
``main`` under ``python3 -IS``, and it also runs alone as ``python3 -IS shim.py``.

Framing, one call per connection: ``numanet-cni 1\\n``, then ``KEY=VALUE\\0`` for each
CNI variable, an empty ``\\0``, then stdin to the end (the shim half-closes). Answer:
``<exit code>\\n`` then stdout to the end. The agent may answer before it has read the
whole request (too large, too slow, too many calls at once) and close: the shim then reads
that answer even though its own sending broke.
"""

import _socket
import posix
import sys

DEFAULT_SOCKET = "/run/numanet/cni.sock"
SOCKET_ENV = "NUMANET_CNI_SOCKET"
TIMEOUT_ENV = "NUMANET_CNI_TIMEOUT"
DEFAULT_TIMEOUT = 120.0
SPEC_VERSION = "1.1.0"
# Kept equal to cni.netconf.SUPPORTED_VERSIONS (tests check it): this file imports nothing.
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CNI_ENV = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
MAGIC = b"numanet-cni 1\n"
_CNI_ENV_BYTES = tuple(name.encode() for name in CNI_ENV)
_MAX_REPLY = 4 << 20
# Kept equal to cni.netconf.MAX_CONFIG_BYTES (tests check it).
MAX_STDIN_BYTES = 1 << 20
_DECODE_FAILURE = 6
_TRY_AGAIN_LATER = 11
_SHIM_ERROR = 199


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def encode_call(environ: dict, stdin: bytes) -> bytes:
    """The request for ``environ`` (bytes keys and values, as ``posix.environ``)."""
    parts = [MAGIC]
    for name in _CNI_ENV_BYTES:
        value = environ.get(name)
        if value is not None:
            parts.append(name + b"=" + value + b"\0")
    parts.append(b"\0")
    parts.append(stdin)
    return b"".join(parts)


def _requested_version(stdin: bytes) -> str:
    import json

    try:
        version = json.loads(stdin).get("cniVersion")
    except Exception:  # noqa: BLE001 - best effort: bad JSON, too deep (RecursionError), no dict
        return SPEC_VERSION
    return version if isinstance(version, str) and version in SUPPORTED_VERSIONS \
        else SPEC_VERSION


def _error(stdin: bytes, code: int, msg: str, details: str) -> bytes:
    import json

    doc = {"cniVersion": _requested_version(stdin), "code": code, "msg": msg, "details": details}
    return json.dumps(doc).encode() + b"\n"


def _version(stdin: bytes) -> bytes:
    import json

    doc = {"cniVersion": _requested_version(stdin), "supportedVersions": list(SUPPORTED_VERSIONS)}
    return json.dumps(doc).encode() + b"\n"


def _timeout(environ: dict) -> float:
    """NUMANET_CNI_TIMEOUT when it is a finite number of seconds above 0, else the
    default (0 would make the socket non-blocking, and a socket takes no infinite or
    negative timeout)."""
    try:
        value = float(environ.get(TIMEOUT_ENV.encode(), DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if 0 < value < 1e9 else DEFAULT_TIMEOUT  # False for nan too


def call_agent(path: bytes, request: bytes, timeout: float) -> tuple[int, bytes]:
    """Send one call, return (exit code, stdout). OSError: the agent is not there;
    TimeoutError: it did not answer; ValueError: it answered, but not properly."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    chunks: list[bytes] = []
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        try:
            try:
                sock.sendall(request)
                sock.shutdown(_socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the agent answered early and closed: its answer waits to be read
            size = 0
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    # The agent answered and closed without reading all of the request:
                    # Linux reports that after the answer, which is whole (it was queued
                    # to this socket before the close).
                    if not chunks:
                        raise
                    break
                if not chunk:
                    break
                size += len(chunk)
                if size > _MAX_REPLY:
                    raise ValueError("answer too large")
                chunks.append(chunk)
        except TimeoutError:
            raise
        except OSError as exc:
            raise ValueError(f"the connection broke ({exc.strerror or exc})") from None
    finally:
        sock.close()
    reply = b"".join(chunks)
    head, sep, stdout = reply.partition(b"\n")
    if not sep or not head.isdigit():
        raise ValueError("the agent closed the connection without a complete answer")
    return int(head), stdout


def run(environ: dict, stdin: bytes) -> tuple[int, bytes]:
    """The whole shim as a function of the bytes environment: (exit code, stdout).
    ``stdin`` may be cut after ``MAX_STDIN_BYTES + 1`` bytes (``read_stdin``)."""
    if environ.get(b"CNI_COMMAND") == b"VERSION":
        # As the reference plugins' skel: VERSION answers whatever the config is.
        return 0, _version(stdin)
    if len(stdin) > MAX_STDIN_BYTES:
        return 1, _error(b"", _DECODE_FAILURE,
                         f"network configuration on stdin is larger than {MAX_STDIN_BYTES} bytes",
                         "numanet refuses configurations this large; it never read the rest")
    path = environ.get(SOCKET_ENV.encode()) or DEFAULT_SOCKET.encode()
    shown = _text(path)
    timeout = _timeout(environ)
    try:
        return call_agent(path, encode_call(environ, stdin), timeout)
    except TimeoutError:
        return 1, _error(stdin, _TRY_AGAIN_LATER,
                         f"numanet agent at {shown} did not answer within {timeout:g} s",
                         "the agent is overloaded or stuck; check its log. The runtime retries.")
    except OSError as exc:
        return 1, _error(stdin, _TRY_AGAIN_LATER,
                         f"numanet agent is not reachable at {shown}: {exc.strerror or exc}",
                         "start the numanet agent on this node (it serves the CNI socket); "
                         f"{SOCKET_ENV} overrides the path. The runtime retries.")
    except ValueError as exc:
        return 1, _error(stdin, _TRY_AGAIN_LATER, f"numanet agent at {shown} answered badly: {exc}",
                         "the agent may have restarted during the call; the runtime retries")


def main() -> int:
    environ = posix.environ
    if not environ.get(b"CNI_COMMAND") and sys.stdin.isatty():
        socket = _text(environ.get(SOCKET_ENV.encode()) or DEFAULT_SOCKET.encode())
        sys.stderr.write("numanet CNI plugin: run by the container runtime with CNI_COMMAND set "
                         f"(CNI spec {', '.join(SUPPORTED_VERSIONS)}); it relays calls to the "
                         f"numanet agent at {socket}\n")
        return 1
    stdin = b""
    try:
        stdin = read_stdin()
        code, out = run(environ, stdin)
    except Exception as exc:  # noqa: BLE001 - a CNI plugin answers in JSON, never a traceback
        code, out = 1, _last_resort(stdin, exc)
    try:
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        pass
    return code


def read_stdin() -> bytes:
    """stdin to its end, but no more than ``MAX_STDIN_BYTES + 1`` bytes: one more than
    allowed is enough to refuse it, and the rest is never read (the runtime's write of it
    ends with EPIPE, which Go's os/exec ignores)."""
    return sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)


def _last_resort(stdin: bytes, exc: BaseException) -> bytes:
    try:
        return _error(stdin, _SHIM_ERROR, f"numanet-cni failed: {type(exc).__name__}: {exc}",
                      "this is a numanet bug; please report it")
    except Exception:  # noqa: BLE001 - even the error cannot be rendered: a fixed one
        return (b'{"cniVersion": "' + SPEC_VERSION.encode() + b'", "code": 199, '
                b'"msg": "numanet-cni failed", "details": "this is a numanet bug; please '
                b'report it"}\n')


def exit_now(code: int) -> None:
    """End the process without the interpreter's teardown, which costs a CNI call about
    1.5 ms (measured with bench/bench_cni.py's shim figures); the shim holds nothing that
    needs it once its output is flushed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    posix._exit(code)


if __name__ == "__main__":
    exit_now(main())
