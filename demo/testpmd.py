"""``dpdk-testpmd`` as a pod's application: one port on a vhost-user or memif socket.

The runner drives testpmd's interactive command line over a pipe (``start``, ``show
port stats``, ``quit``) and reads the port counters from its answers, so the caller
decides when traffic starts and when it is measured. Its EAL arguments are what the pod's
own kit prints (``numanet-app dpdk-args``: the socket, MAC and role from ``numanet.json``,
the hugepages Allocate mounted, the pod's CPUs on the slot's NUMA node), run in the pod's
view of its mounts; nothing here builds them. testpmd's own needs: ``--total-num-mbufs``
(its default does not fit).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

BINARY = "dpdk-testpmd"
DPDK_RUNTIME_DIR = Path("/var/run/dpdk")
PROMPT = "testpmd> "
_RX = re.compile(r"RX-packets:\s+(\d+)")
_TX = re.compile(r"TX-packets:\s+(\d+)")
_LINK = re.compile(r"Link status:\s+(\w+)")
# Where the pod's mount namespace stages the host paths before its own /run hides them
# (/mnt exists on every Debian host; a tmpfs over it is private to the namespace).
_STAGING = "/mnt"


class TestpmdError(RuntimeError):
    """testpmd did not start or stopped answering; the message carries its last output."""


@dataclass(frozen=True)
class Settings:
    """One pod's testpmd: its EAL arguments come from ``numanet-app dpdk-args``, run the
    way the pod runs it, in the pod's own view of its slot and hugepages (the Allocate
    mounts, bound at the container paths in a private mount namespace), on the pod's
    CPUs and in its network namespace."""

    file_prefix: str
    mounts: Mapping[str, str]  # container path -> host path, from Allocate
    env: Mapping[str, str]  # the container's environment, from Allocate
    # CPUs of testpmd's main lcore and its forwarding lcore: the pod's cpuset.
    cpus: tuple[int, int] = (0, 1)
    memory_mb: int = 64
    mbufs: int = 8192
    forward_mode: str = "macswap"
    eth_peer: str | None = None
    netns: str | None = None  # run inside this named network namespace (the pod's)
    binary: str = BINARY
    python: str = sys.executable  # runs the pod-side kit (``python -m app``)

    def command(self) -> list[str]:
        app = [f"--total-num-mbufs={self.mbufs}", f"--forward-mode={self.forward_mode}"]
        if self.eth_peer:
            app.append(f"--eth-peer=0,{self.eth_peer}")
        lcores = len(set(self.cpus))
        # numanet-app ends its words with "--" and the options the ports need (memif
        # queues); testpmd's own follow.
        script = [
            "eal=$(" + " ".join(shlex.quote(w) for w in (
                "env", *(f"{k}={v}" for k, v in sorted(self.env.items())),
                self.python, "-m", "app", "dpdk-args", "--testpmd", f"--lcores={lcores}",
                f"--file-prefix={self.file_prefix}", f"--memory={self.memory_mb}")) + ") || exit 2",
            "echo numanet-app dpdk-args: $eal",
            "exec " + " ".join(shlex.quote(w) for w in line_buffered([self.binary]))
            + " $eal -i " + " ".join(shlex.quote(w) for w in app),
        ]
        cpus = ",".join(str(c) for c in dict.fromkeys(self.cpus))
        cmd = ["taskset", "-c", cpus, *in_pod_mounts(" ; ".join(script), self.mounts)]
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd


def in_pod_mounts(script: str, mounts: Mapping[str, str]) -> list[str]:
    """``script`` in a private mount namespace where each host path of ``mounts`` is bound
    at its container path under a /run of the pod's own (a tmpfs, as a container's /run;
    DPDK's runtime files land there too). The host paths are bound to a private staging
    tmpfs first, since the pod's /run hides the host's."""
    outside = [p for p in mounts if not PurePosixPath(p).is_relative_to("/run")]
    if outside:
        raise ValueError(f"container paths outside /run cannot be mounted here: {outside}")
    steps = ["mount --make-rprivate /", f"mount -t tmpfs numanet-pod {_STAGING}"]
    for i, host in enumerate(mounts.values()):
        steps += [f"mkdir {_STAGING}/{i}", f"mount --bind {shlex.quote(host)} {_STAGING}/{i}"]
    steps.append("mount -t tmpfs numanet-pod /run")
    for i, container in enumerate(mounts):
        steps += [f"mkdir -p {shlex.quote(container)}",
                  f"mount --bind {_STAGING}/{i} {shlex.quote(container)}"]
    return ["unshare", "--mount", "sh", "-ec", " ; ".join([*steps, script])]


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
    def for_pod(cls, settings: Settings, hugepage_dir: Path | None = None,
                log_path: Path | None = None) -> Testpmd:
        return cls(settings.command(), settings.file_prefix, hugepage_dir=hugepage_dir,
                   log_path=log_path)

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
