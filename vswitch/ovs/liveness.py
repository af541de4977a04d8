"""Is ovs-vswitchd alive? Known the moment it dies, without polling it.

ovs-vswitchd serves its control socket (unixctl, what ``ovs-appctl`` talks to) for as long
as it runs. ``VswitchdWatch`` holds one idle connection to it and blocks in ``poll``:
when the process dies, however it dies (SIGKILL included), the kernel closes its end and
the watch wakes at once. The database cannot tell that quickly: ovsdb-server outlives
vswitchd, and the backend's other proof of life (a change acknowledged through
``cur_cfg``) needs a timeout to conclude anything.

The socket is found where OVS puts it, from the database socket's directory (its run
directory): ``ovs-vswitchd.<pid>.ctl`` with the pid from ``ovs-vswitchd.pid``, or
``ovs-vswitchd.ctl`` (``--unixctl`` as the private OVS of the tests sets it). While
vswitchd is down, the watch tries to connect again every ``retry`` seconds (one failed
``connect`` each time), so a restarted vswitchd is seen within that.

States: ``alive`` True (connected), False (the socket was there and closed or refuses
connections: vswitchd is not running), None (no control socket found: unknown, the
caller relies on its other checks).

``ping`` asks vswitchd for its version over the same connection (what ``ovs-appctl
version`` asks): its main loop answers it, so a vswitchd that is alive but stuck is found
without a database write. The backend's health uses it instead of a no-op transaction
acknowledged through ``cur_cfg``, which made vswitchd reconfigure every bridge at every
probe of the agent's monitor.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

RETRY_S = 0.5


def control_sockets(run_dir: str) -> list[str]:
    """Where ovs-vswitchd's control socket may be in ``run_dir``, most specific first."""
    found = []
    try:
        with open(os.path.join(run_dir, "ovs-vswitchd.pid"), encoding="ascii") as handle:
            pid = int(handle.read().strip())
        found.append(os.path.join(run_dir, f"ovs-vswitchd.{pid}.ctl"))
    except (OSError, ValueError):
        pass
    found.append(os.path.join(run_dir, "ovs-vswitchd.ctl"))
    return found


class VswitchdWatch:
    """A thread holding a connection to ovs-vswitchd's control socket; ``on_change(alive)``
    is called (on that thread) whenever ``alive`` changes."""

    def __init__(self, run_dir: str | None, on_change: Callable[[bool], None],
                 ctl: str | None = None, retry: float = RETRY_S) -> None:
        self.run_dir = run_dir
        self.ctl = ctl
        self.retry = retry
        self.alive: bool | None = None
        self.reason = ""
        self.ctl_path = ""
        self._on_change = on_change
        self._sock: socket.socket | None = None
        self._replies = threading.Condition()
        self._answered: set[int] = set()
        self._next_id = 0
        self._inbox = ""
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None

    def start(self) -> VswitchdWatch:
        self._thread = threading.Thread(target=self._run, name="ovs-vswitchd-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _candidates(self) -> list[str]:
        if self.ctl:
            return [self.ctl]
        return control_sockets(self.run_dir) if self.run_dir else []

    def _set(self, alive: bool | None, reason: str = "") -> None:
        changed = alive != self.alive
        self.alive, self.reason = alive, reason
        if changed and alive is not None:
            if alive:
                log.info("ovs-vswitchd control socket connected, ovs-vswitchd runs")
            else:
                log.warning("ovs-vswitchd is not running: %s", reason)
            try:
                self._on_change(alive)
            except Exception:  # noqa: BLE001 - the watch must outlive its listeners
                log.exception("ovs-vswitchd liveness callback failed")

    def _connect(self) -> socket.socket | None:
        """A connection to the first control socket that accepts one; None, with ``alive``
        set to what the failures mean."""
        refused = ""
        for path in self._candidates():
            if not os.path.exists(path):
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.settimeout(1.0)
            try:
                sock.connect(path)
            except OSError as exc:
                sock.close()
                refused = f"its control socket {path} refuses connections ({exc.strerror or exc})"
                continue
            sock.setblocking(False)
            self.ctl_path = path
            return sock
        if refused:
            self._set(False, refused)
        elif self.alive:
            self._set(False, f"its control socket is gone from {self.ctl or self.run_dir}")
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            sock = self._connect()
            if sock is None:
                select.select([self._wake_r], [], [], self.retry)
                continue
            with sock:
                with self._replies:
                    self._sock, self._inbox = sock, ""
                self._set(True)
                while not self._stop.is_set():
                    ready, _, _ = select.select([sock.fileno(), self._wake_r], [], [])
                    if sock.fileno() not in ready:
                        continue
                    try:
                        data = sock.recv(65536)
                        if data:
                            self._received(data)
                            continue
                    except BlockingIOError:
                        continue
                    except OSError:
                        pass
                    with self._replies:
                        self._sock = None
                        self._replies.notify_all()
                    self._set(False, f"it closed its control socket {self.ctl_path} (it exited "
                                     "or was killed)")
                    break
                with self._replies:
                    self._sock = None
            # A dying process may still accept on its socket for a moment: look again only
            # after ``retry``, so that one death is not seen as a death and a restart.
            select.select([self._wake_r], [], [], self.retry)

    # -- asking it something -----------------------------------------------------------------

    def ping(self, timeout: float) -> bool | None:
        """True when vswitchd answered a ``version`` request within ``timeout``, False when
        it did not, None when there is no connection to ask it on."""
        with self._replies:
            sock = self._sock
            if sock is None:
                return None
            self._next_id += 1
            ident = self._next_id
            request = json.dumps({"id": ident, "method": "version", "params": []}).encode()
            try:
                sock.sendall(request)
            except (BlockingIOError, OSError):
                return False
            deadline = time.monotonic() + timeout
            while ident not in self._answered:
                left = deadline - time.monotonic()
                if left <= 0 or self._sock is not sock:
                    return False
                self._replies.wait(left)
            self._answered.discard(ident)
            return True

    def _received(self, data: bytes) -> None:
        """Replies (JSON-RPC objects, back to back) mark their ids answered."""
        with self._replies:
            self._inbox += data.decode("utf-8", "replace")
            decoder = json.JSONDecoder()
            while True:
                text = self._inbox.lstrip()
                if not text:
                    self._inbox = ""
                    break
                try:
                    message, end = decoder.raw_decode(text)
                except ValueError:
                    self._inbox = text if len(text) < 1 << 20 else ""  # wait for the rest
                    break
                self._inbox = text[end:]
                if isinstance(message, dict) and isinstance(message.get("id"), int):
                    self._answered.add(message["id"])
            self._replies.notify_all()
