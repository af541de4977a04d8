"""Careful reads from a sysfs tree: every odd or unreadable entry becomes a warning string.

Discovery must describe a half-broken machine rather than crash on it, so nothing here
raises for a bad entry; callers get ``None`` and the reason lands in ``warnings``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# sysfs attributes are at most a page; a bigger file is not a sysfs attribute.
_MAX_READ = 64 * 1024


class SysfsReader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.warnings: list[str] = []

    def warn(self, path: Path, problem: str) -> None:
        self.warnings.append(f"{path}: {problem}")

    def read(self, path: Path, *, required: bool = True) -> str | None:
        """The file's text, stripped; ``None`` (and a warning if ``required``) otherwise."""
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            if required:
                self.warn(path, "missing")
            return None
        except OSError as exc:
            self.warn(path, f"unreadable ({exc.strerror or exc})")
            return None
        if not stat.S_ISREG(mode):
            # A FIFO would block the reader forever; a directory is plainly wrong.
            self.warn(path, "unreadable (not a regular file)")
            return None
        try:
            with open(path, "rb") as handle:
                data = handle.read(_MAX_READ)
        except OSError as exc:
            self.warn(path, f"unreadable ({exc.strerror or exc})")
            return None
        return data.decode("utf-8", errors="replace").strip()

    def read_int(self, path: Path, *, required: bool = True, base: int = 10) -> int | None:
        text = self.read(path, required=required)
        if text is None:
            return None
        try:
            return int(text, base)
        except ValueError:
            self.warn(path, f"not an integer: {_short(text)!r}")
            return None

    def link_name(self, path: Path) -> str | None:
        """Last component of a symlink's target (``driver`` -> ``vfio-pci``); None if absent."""
        try:
            target = os.readlink(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if os.path.lexists(path):
                self.warn(path, f"expected a symlink ({exc.strerror or exc})")
            return None
        name = os.path.basename(os.path.normpath(target))
        return name or None

    def listdir(self, path: Path, *, required: bool = False) -> list[str]:
        """Sorted entry names; empty (with a warning if ``required``/unreadable) otherwise."""
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            if required:
                self.warn(path, "missing")
            return []
        except NotADirectoryError:
            self.warn(path, "not a directory")
            return []
        except OSError as exc:
            self.warn(path, f"unreadable ({exc.strerror or exc})")
            return []


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
