"""What the person watching sees: one line per step with its duration, a progress line
during waits (rewritten in place on a terminal), and nothing on stdout but the final JSON
document in ``--json`` mode (steps then go to stderr, progress nowhere).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    detail: str = ""
    ok: bool = True


@dataclass
class Console:
    json_mode: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    steps: list[Step] = field(default_factory=list)
    _progress_shown: bool = False

    @property
    def _lines(self) -> TextIO:
        return self.err if self.json_mode else self.out

    @property
    def _tty(self) -> bool:
        return not self.json_mode and self.out.isatty()

    def line(self, text: str = "") -> None:
        self._clear_progress()
        print(text, file=self._lines, flush=True)

    def progress(self, text: str) -> None:
        if not self._tty:
            return
        width = 100
        self.out.write("\r" + text[:width].ljust(width))
        self.out.flush()
        self._progress_shown = True

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.out.write("\r" + " " * 100 + "\r")
            self.out.flush()
            self._progress_shown = False

    @contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Time the body; print ``[ 1.2s] name: detail`` (the body sets ``detail``). A step
        that raises prints FAILED (or STOPPED for a signal) with the error's first line."""
        record = Step(name)
        started = time.monotonic()
        mark = "FAILED "
        try:
            yield record
        except Exception as exc:
            record.ok = False
            record.detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise
        except BaseException:  # a signal (the demo's Interrupted), not a failure
            record.ok = False
            mark = "STOPPED "
            raise
        else:
            mark = ""
        finally:
            record.seconds = time.monotonic() - started
            self.steps.append(record)
            detail = f": {record.detail}" if record.detail else ""
            self.line(f" [{record.seconds:4.1f}s] {mark}{name}{detail}")
