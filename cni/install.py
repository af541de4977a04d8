"""Install the CNI shim as a single file: ``python -m cni.install [/opt/cni/bin/numanet]``.

The shim is self-contained (standard library only), so the installed plugin is the shim's
source behind a ``#!<python> -IS`` line: isolated mode without ``site`` skips the venv's
start-up work, which is most of the time a CNI call spends in Python.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

DEFAULT_DEST = Path("/opt/cni/bin/numanet")


def shim_source() -> str:
    return (Path(__file__).with_name("shim.py")).read_text(encoding="utf-8")


def install(dest: Path = DEFAULT_DEST, python: str = sys.executable) -> Path:
    """Write the shim to ``dest`` (atomically, 0755) and return the path."""
    if not os.path.isabs(python):
        raise ValueError(f"python interpreter {python!r} must be an absolute path")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    body = f"#!{python} -IS\n" + shim_source()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


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
