"""``dpdk-testpmd`` as a pod's application: one port on a vhost-user or memif socket.

The runner drives testpmd's interactive command line over a pipe (``start``, ``show
port stats``, ``quit``) and reads the port counters from its answers, so the caller
decides when traffic starts and when it is measured. Settings come from what the pod
was given (the socket, MAC and role in ``numanet.json``, the hugepage directory that
Allocate mounted, the CPUs of the slot's NUMA node); nothing here knows numanet's paths.

Known needs (see the project's notes on OVS-DPDK): ``--no-pci`` (or DPDK probes the
machine's NICs), a ``--file-prefix`` of its own, ``--total-num-mbufs`` (the default does
not fit), and for vhost-user with hugepages ``--single-file-segments`` (one file per
page exceeds vhost-user's memory-region limit).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BINARY = "dpdk-testpmd"
DPDK_RUNTIME_DIR = Path("/var/run/dpdk")
PROMPT = "testpmd> "
_RX = re.compile(r"RX-packets:\s+(\d+)")
_TX = re.compile(r"TX-packets:\s+(\d+)")
_LINK = re.compile(r"Link status:\s+(\w+)")


class TestpmdError(RuntimeError):
    """testpmd did not start or stopped answering; the message carries its last output."""


@dataclass(frozen=True)
class Port:
    """The container side of one interface, as the pod was told (numanet.json)."""

    kind: str  # "vhost-user" | "memif"
    socket: Path  # where this process finds the socket (host path for the demo)
    role: str  # vhost-user mode server|client; memif role slave|master (container side)
    mac: str | None = None
    memif_id: int = 0
    queues: int = 1  # queue pairs the other side expects (OVS memif: one per sending thread)

    def vdev(self) -> str:
        mac = f",mac={self.mac}" if self.mac else ""
        if self.kind == "vhost-user":
            # Container is the vhost-user server: virtio_user creates the socket.
            server = 1 if self.role == "server" else 0
            return f"virtio_user0,path={self.socket},server={server},queues=1{mac}"
        if self.kind == "memif":
            role = "client" if self.role in ("slave", "client") else "server"
            return (f"net_memif0,role={role},id={self.memif_id},socket={self.socket},"
                    f"socket-abstract=no{mac}")
        raise ValueError(f"testpmd cannot attach to a {self.kind!r} interface")


@dataclass(frozen=True)
class Settings:
    port: Port
    file_prefix: str
    # CPUs of testpmd's main lcore and its forwarding lcore; they may be the same CPU.
    cpus: tuple[int, int] = (0, 1)
    hugepage_dir: Path | None = None  # None: --no-huge
    memory_mb: int = 64
    mbufs: int = 8192
    forward_mode: str = "macswap"
    eth_peer: str | None = None
    netns: str | None = None  # run inside this named network namespace (the pod's)
    binary: str = BINARY
    extra_eal: Sequence[str] = field(default_factory=tuple)
    extra_app: Sequence[str] = field(default_factory=tuple)

    def command(self) -> list[str]:
        main, forward = self.cpus
        eal = [f"--lcores=0@{main},1@{forward}", "--main-lcore=0", "--no-pci",
               "--no-telemetry", f"--file-prefix={self.file_prefix}", f"--vdev={self.port.vdev()}"]
        if self.hugepage_dir is None:
            eal += ["--no-huge", "-m", str(max(self.memory_mb, 256))]
        else:
            eal += [f"--huge-dir={self.hugepage_dir}", "--single-file-segments",
                    "-m", str(self.memory_mb)]
        app = ["-i", f"--total-num-mbufs={self.mbufs}", f"--forward-mode={self.forward_mode}"]
        if self.port.queues > 1:
            app += [f"--rxq={self.port.queues}", f"--txq={self.port.queues}"]
        if self.eth_peer:
            app.append(f"--eth-peer=0,{self.eth_peer}")
        cmd = line_buffered([self.binary, *eal, *self.extra_eal, "--", *app, *self.extra_app])
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd


def line_buffered(cmd: Sequence[str]) -> list[str]:
    """testpmd prints its answers with stdio, fully buffered on a pipe: line-buffer it, or
    an answer only arrives when the buffer fills."""
    return ["stdbuf", "-oL", *cmd]


@dataclass(frozen=True)
class PortStats:
    rx_packets: int
    tx_packets: int
    at: float  # time.monotonic() of the reading


class Testpmd:
    """One interactive testpmd process: ``launch``, ``wait_ready``, ``command``s, ``close``.

    ``cmd`` is the whole command line (``Settings.command()`` for a pod; callers may wrap
    it, e.g. in ``unshare``, before ``launch``). Answers are read up to the next prompt,
    so the command must line-buffer testpmd's stdout (``line_buffered``).
    """

    def __init__(self, cmd: Sequence[str], file_prefix: str, *,
                 hugepage_dir: Path | None = None, log_path: Path | None = None) -> None:
        self.cmd = list(cmd)
        self.file_prefix = file_prefix
        self.hugepage_dir = hugepage_dir
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._out = bytearray()
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()  # one command at a time

    @classmethod
    def for_pod(cls, settings: Settings, log_path: Path | None = None) -> Testpmd:
        return cls(settings.command(), settings.file_prefix,
                   hugepage_dir=settings.hugepage_dir, log_path=log_path)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def output(self) -> str:
        with self._cond:
            return self._out.decode(errors="replace")

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def launch(self) -> int:
        """Start the process (its own session: a Ctrl-C meant for the caller must not kill it
        before the caller's teardown runs); returns its pid. ``wait_ready`` next."""
        self._proc = subprocess.Popen(
            self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"testpmd-{self.file_prefix}")
        self._reader.start()
        return self._proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for the first prompt: EAL is initialised and the ports are configured."""
        self._wait_for(PROMPT, 0, timeout)

    def command(self, line: str, timeout: float = 10.0) -> str:
        """Send one command line; its output (up to the next prompt)."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None or proc.poll() is not None:
                raise TestpmdError(f"testpmd {self.file_prefix} is not running\n{self.tail()}")
            with self._cond:
                mark = len(self._out)
            try:
                proc.stdin.write(line.encode() + b"\n")
                proc.stdin.flush()
            except OSError as exc:
                raise TestpmdError(f"testpmd {self.file_prefix} stopped reading commands "
                                   f"({exc})\n{self.tail()}") from None
            end = self._wait_for(PROMPT, mark, timeout)
            with self._cond:
                return self._out[mark:end].decode(errors="replace")

    def link_up(self, port: int = 0) -> bool:
        match = _LINK.search(self.command(f"show port info {port}"))
        return bool(match and match.group(1).lower() == "up")

    def stats(self, port: int = 0) -> PortStats:
        """The port's device counters since start-up (``show port stats``)."""
        text = self.command(f"show port stats {port}")
        rx, tx = _RX.search(text), _TX.search(text)
        if not rx or not tx:
            raise TestpmdError(f"cannot read port counters from testpmd's answer: {text!r}")
        return PortStats(int(rx.group(1)), int(tx.group(1)), time.monotonic())

    def close(self, timeout: float = 10.0) -> None:
        """``stop`` and ``quit``, or signals if it does not answer; removes DPDK's files."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                try:
                    self.command("stop", timeout=3)
                    assert proc.stdin is not None
                    proc.stdin.write(b"quit\n")
                    proc.stdin.close()
                except (TestpmdError, OSError, AssertionError):
                    pass
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    try:
                        proc.wait(3)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            if self._reader is not None:
                self._reader.join(timeout=2)
            if proc.stdout is not None:
                proc.stdout.close()
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        self.remove_files()
        self._save_log()

    def remove_files(self) -> None:
        """DPDK leaves its runtime directory and page files behind even on a clean exit."""
        shutil.rmtree(DPDK_RUNTIME_DIR / self.file_prefix, ignore_errors=True)
        if self.hugepage_dir is not None and self.hugepage_dir.is_dir():
            for page in self.hugepage_dir.glob(f"{self.file_prefix}map_*"):
                page.unlink(missing_ok=True)

    def tail(self, lines: int = 15) -> str:
        text = self.output
        return "\n".join(text.replace(PROMPT, "").splitlines()[-lines:])

    # --- internals ---

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if chunk:
                    self._out += chunk
                self._cond.notify_all()
            if not chunk:
                return

    def _wait_for(self, text: str, start: int, timeout: float) -> int:
        """Index of ``text`` in the output after ``start``; TestpmdError if it never comes."""
        needle = text.encode()
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                index = self._out.find(needle, start)
                if index >= 0:
                    return index
                assert self._proc is not None
                if self._proc.poll() is not None and not (self._reader
                                                          and self._reader.is_alive()):
                    raise TestpmdError(f"testpmd {self.file_prefix} exited with "
                                       f"{self._proc.returncode}:\n{self.tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TestpmdError(f"testpmd {self.file_prefix} did not answer in "
                                       f"{timeout:.0f} s:\n{self.tail()}")
                self._cond.wait(min(remaining, 0.1))

    def _save_log(self) -> None:
        if self.log_path is None:
            return
        try:
            with self._cond:
                self.log_path.write_bytes(bytes(self._out))
        except OSError:
            pass
