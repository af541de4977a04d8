"""Small file helpers: atomic writes (readers never see half a file) and forgiving removal."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def write_atomic(path: Path, data: bytes, mode: int = 0o644, dir_mode: int = 0o755) -> None:
    """Write to a temporary file in the same directory, then rename it over ``path``.

    A missing directory is created (with ``dir_mode``) on the first failure, so callers on
    a hot path do not pay a mkdir for every write.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove_files(paths: Iterable[Path]) -> int:
    """Remove files, ignoring ones already gone: shutdown must not stop half way."""
    removed = 0
    for path in paths:
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove file path=%s error=%s", path, exc)
    return removed
