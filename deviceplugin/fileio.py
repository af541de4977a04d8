"""Small file helpers: atomic writes (readers never see half a file), one-JSON-file-per-key
directories read back after a restart, and forgiving removal."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

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


def load_json_files(directory: Path, parse: Callable[[Any], T], key: Callable[[T], str],
                    what: str) -> dict[str, T]:
    """``key(record) -> record`` for every ``<key>.json`` in ``directory`` (none when it is
    missing). A file that does not parse, or whose name is not its record's key, is
    reported and removed: what a previous agent left half written must not stop this one."""
    records: dict[str, T] = {}
    if not directory.is_dir():
        return records
    for path in sorted(directory.glob("*.json")):
        try:
            record = parse(json.loads(path.read_text()))
            if path.name != f"{key(record)}.json":
                raise ValueError(f"file name does not match its {what}'s key")
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("dropping unreadable %s path=%s error=%s", what, path, exc)
            path.unlink(missing_ok=True)
            continue
        records[key(record)] = record
    return records


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
