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

Where a compiled relay is at hand (``cni/relay.c``, built by ``make relay`` into
``build/numanet-relay`` and by the image into ``<prefix>/libexec/numanet-relay``), the
plugin is that binary instead: the same framing and answers as the shim, without the
interpreter's start-up (about 9 ms of every CNI call). The shim and its bytecode are
installed either way, and the launcher is the plugin whenever there is no relay binary.
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
RELAY_NAME = "numanet-relay"
# "auto" (find a built relay), "none" (the Python launcher), or the relay binary's path.
RELAY_ENV = "NUMANET_CNI_RELAY"


def relay_candidates() -> list[Path]:
    """Where a built relay is looked for: the image's ``<prefix>/libexec`` (the venv the
    installer runs in), then the source tree's ``build/`` (``make relay``)."""
    return [Path(sys.prefix) / "libexec" / RELAY_NAME,
            Path(__file__).resolve().parents[1] / "build" / RELAY_NAME]


def find_relay(choice: str | None = None) -> Path | None:
    """The relay binary to install: ``choice`` (else ``$NUMANET_CNI_RELAY``, else "auto"):
    "none" for the Python launcher, "auto" for the first executable candidate (None when
    there is none), or a path, which must be an executable file."""
    choice = choice or os.environ.get(RELAY_ENV) or "auto"
    if choice == "none":
        return None
    if choice != "auto":
        path = Path(choice)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ValueError(f"relay {choice!r} is not an executable file")
        return path
    return next((p for p in relay_candidates() if p.is_file() and os.access(p, os.X_OK)), None)


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


def install(dest: Path = DEFAULT_DEST, python: str = sys.executable,
            relay: Path | None = None) -> Path:
    """Write the shim and its bytecode into ``private_dir(dest)``, then the plugin to
    ``dest``: the ``relay`` binary when one is given, else the launcher (each file
    atomically, the plugin 0755); return ``dest``."""
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
    if relay is not None:
        _write_atomic(dest, Path(relay).read_bytes(), 0o755)
    else:
        _write_atomic(dest, launcher(python, lib), 0o755)
    return dest


def _write_atomic(path: Path, content: str | bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    data = content.encode() if isinstance(content, str) else content
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
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
    parser.add_argument("--relay", default=None,
                        help="the compiled relay to install as the plugin: a path, 'auto' (the "
                             "default: a built one if there is one, else the Python launcher) "
                             f"or 'none'; ${RELAY_ENV} sets the default")
    args = parser.parse_args(argv)
    try:
        relay = find_relay(args.relay)
    except ValueError as exc:
        parser.error(str(exc))
    dest = install(args.dest, args.python, relay)
    print(f"{dest} ({'relay ' + str(relay) if relay else 'python shim, ' + args.python})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
