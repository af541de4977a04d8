"""Install the CNI plugin: ``python -m cni.install [/opt/cni/bin/numanet]``.

The shim is self-contained (standard library only). The plugin the runtime executes is a
four-line launcher behind a ``#!<python> -IS`` line (isolated mode without ``site`` skips
the venv's start-up work) that imports the shim from a private directory next to it,
``/opt/cni/bin/.numanet/``, which holds the shim's source and its bytecode compiled at
install time. Compiling the shim's source on every exec cost each CNI call about 0.9 ms.

The bytecode goes where the interpreter's own import looks for it
(``__pycache__/numanet_shim.<cache tag>.pyc``) as a checked-hash pyc, so every import
verifies it: a host interpreter other than the installer's (another version, another
magic number) or a source replaced by a reinstall makes it compile the source instead and,
where the directory is writable, cache its own bytecode. The plugin therefore always runs
the installed source; only its speed depends on the cache.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import py_compile
import sys
import tempfile
from pathlib import Path

DEFAULT_DEST = Path("/opt/cni/bin/numanet")
MODULE = "numanet_shim"


def shim_source() -> str:
    return (Path(__file__).with_name("shim.py")).read_text(encoding="utf-8")


def private_dir(dest: Path) -> Path:
    """Where the shim of the plugin installed as ``dest`` lives: ``.<name>`` beside it
    (hidden, so nothing lists it as a plugin)."""
    return dest.parent / f".{dest.name}"


def launcher(python: str, lib: Path) -> str:
    """The executable plugin: put ``lib`` first on the path and run the shim from it."""
    return (f"#!{python} -IS\n"
            f"# numanet CNI plugin (python -m cni.install); the shim is {MODULE}.py below.\n"
            f"import sys\nsys.path.insert(0, {str(lib)!r})\n"
            f"from {MODULE} import exit_now, main\nexit_now(main())\n")


def install(dest: Path = DEFAULT_DEST, python: str = sys.executable) -> Path:
    """Write the shim and its bytecode into ``private_dir(dest)``, then the launcher to
    ``dest`` (each file atomically; the launcher 0755) and return ``dest``."""
    if not os.path.isabs(python) or any(c.isspace() for c in python):
        raise ValueError(f"python interpreter {python!r} must be an absolute path without "
                         "spaces (it goes on the plugin's #! line)")
    dest = Path(os.path.abspath(dest))
    lib = private_dir(dest)
    source = lib / f"{MODULE}.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    # Root runs whatever these directories hold: never group/world-writable, whatever
    # the umask or an earlier install left.
    for directory in (lib, cached.parent):
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(directory, 0o755)
    _write_atomic(source, shim_source(), 0o644)
    # Bytecode another interpreter cached from the previous source checks only its mtime
    # and size; drop it so that interpreter recompiles from this source.
    if cached.parent.is_dir():
        for stale in cached.parent.iterdir():
            if stale.name.startswith(f"{MODULE}.") and stale != cached:
                stale.unlink(missing_ok=True)
    # Atomic (py_compile writes beside and renames), so a plugin exec'd meanwhile reads
    # the old or the new bytecode, and the hash check pairs either with its source.
    py_compile.compile(str(source), cfile=str(cached), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    _write_atomic(dest, launcher(python, lib), 0o755)
    return dest


def _write_atomic(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cni.install", description=__doc__)
    parser.add_argument("dest", nargs="?", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for the #! line (default: this one)")
    args = parser.parse_args(argv)
    print(install(args.dest, args.python))
    return 0


if __name__ == "__main__":
    sys.exit(main())
