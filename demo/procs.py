"""Processes, seen through /proc: identity that survives pid reuse, who holds a directory.

A pid alone is not an identity (pids are reused), so every process the demo starts is
remembered as (pid, start time); a killed run's leftovers are only stopped when both
still match.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessId:
    pid: int
    start: int  # clock ticks since boot (/proc/<pid>/stat field 22)
    name: str = ""

    def alive(self) -> bool:
        return start_time(self.pid) == self.start and state(self.pid) not in ("Z", "X", None)

    def to_json(self) -> dict[str, object]:
        return {"pid": self.pid, "start": self.start, "name": self.name}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ProcessId:
        return cls(int(str(data["pid"])), int(str(data["start"])), str(data.get("name", "")))


@dataclass(frozen=True)
class Holder:
    """A live process that uses a path under a directory."""

    pid: int
    name: str
    exe: str
    path: str  # what it holds (its command line, an open file, a mapping or its cwd)

    def describe(self) -> str:
        return f"pid {self.pid} ({self.name}) holds {self.path}"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def identify(pid: int, name: str = "") -> ProcessId:
    start = start_time(pid)
    if start is None:
        raise ProcessLookupError(f"process {pid} is gone")
    return ProcessId(pid, start, name or comm(pid))


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip()
    except OSError:
        return "?"


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def cmdline(pid: int) -> str:
    """The process's arguments joined by spaces; empty when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def ancestors(pid: int) -> set[int]:
    """``pid`` and its parents up to init (sudo, make, a shell: they name the demo's
    directory in their command lines without holding anything in it)."""
    seen: set[int] = set()
    while pid > 0 and pid not in seen:
        seen.add(pid)
        fields = _stat_fields(pid)
        pid = int(fields[1]) if fields and len(fields) > 1 else 0
    return seen


def holders(directories: list[Path]) -> list[Holder]:
    """Live processes (other than this one and its ancestors) whose command line, cwd,
    open files or memory mappings point into one of ``directories``."""
    roots = [str(d).rstrip("/") + "/" for d in directories]
    skip = ancestors(os.getpid())
    found: list[Holder] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        pid = int(entry.name)
        if state(pid) in ("Z", "X", None):
            continue
        path = _holds(pid, roots)
        if path:
            found.append(Holder(pid, comm(pid), _exe(pid), path))
    return found


def _holds(pid: int, roots: list[str]) -> str | None:
    def inside(text: str) -> bool:
        return any(text.startswith(root) or text + "/" in roots for root in roots)

    for word in cmdline(pid).split():
        # --option=/path and unix:/path both count.
        for candidate in (word, word.partition("=")[2], word.partition(":")[2]):
            if candidate and inside(candidate):
                return f"{candidate} (in its command line)"
    with contextlib.suppress(OSError):
        cwd = os.readlink(f"/proc/{pid}/cwd")
        if inside(cwd):
            return f"{cwd} (its working directory)"
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if inside(target):
                    return target
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                parts = line.split(None, 5)
                if len(parts) == 6 and inside(parts[5].strip()):
                    return parts[5].strip()
    return None


def stop(proc: ProcessId, timeout: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; True when the process is gone."""
    if not proc.alive():
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    if wait_gone(proc, timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    return wait_gone(proc, 5.0)


def wait_gone(proc: ProcessId, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while proc.alive():
        if time.monotonic() > deadline:
            return False
        # A child of ours stays a zombie until reaped; reap it if it is ours.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(proc.pid, os.WNOHANG)
        time.sleep(0.02)
    return True
