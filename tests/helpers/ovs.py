"""A real, private OVS-DPDK for tests (ovsdb-server + ovs-vswitchd-dpdk, no hugepages).

Use the ready-made session fixture in a conftest (importing it is what registers it)::

    from helpers.ovs import private_ovs  # noqa: F401  (a session-scoped PrivateOvs)

or make one with other options or another scope::

    fresh_ovs = private_ovs_fixture(scope="function")

Tests that share the session instance should each use their own bridge
(``unique_bridge()``) and remove the ports they plug. Everything skips, with the install
command, when the Debian packages are missing.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from demo.private_ovs import INSTALL_HINT, PrivateOvs, missing_ovs_parts

T = TypeVar("T")
_bridges = itertools.count()


def require_ovs() -> None:
    """Skip the calling test when OVS-DPDK is not installed, saying how to install it."""
    missing = missing_ovs_parts()
    if missing:
        pytest.skip(f"OVS-DPDK is not installed (missing {', '.join(missing)}): {INSTALL_HINT}")


def short_tmpdir(prefix: str) -> str:
    """A directory under /tmp: unix socket paths must stay under 107 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


@contextmanager
def started_private_ovs(**options: Any) -> Iterator[PrivateOvs]:
    """Start a PrivateOvs in a fresh short directory; stop it and remove the directory after."""
    require_ovs()
    base = short_tmpdir("nnovs-")
    ovs = PrivateOvs(base, **options)
    ovs.start()
    try:
        yield ovs
    finally:
        ovs.stop()
        # NUMANET_KEEP_OVS_DIR=1 keeps the logs and database of a run for a post-mortem.
        if not os.environ.get("NUMANET_KEEP_OVS_DIR"):
            shutil.rmtree(base, ignore_errors=True)


def private_ovs_fixture(scope: str = "session", **options: Any) -> Any:
    """A pytest fixture (of ``scope``) yielding a started PrivateOvs with ``options``."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload,misc]
    def _private_ovs() -> Iterator[PrivateOvs]:
        with started_private_ovs(**options) as ovs:
            yield ovs

    return _private_ovs


# One instance for the whole session: every test area that imports it shares it.
private_ovs = private_ovs_fixture("session")


def unique_bridge(prefix: str = "t") -> str:
    """A bridge name no other test of this process uses (at most 15 characters)."""
    return f"{prefix}{os.getpid() % 10000}x{next(_bridges)}"[:15]


def eventually(check: Callable[[], T], timeout: float = 5.0, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail the test with its last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(interval)
        value = check()
    return value


def _ovsdb_value(value: Any) -> Any:
    """ovs-vsctl JSON ("map"/"set"/"uuid" pairs) to plain Python values."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, inner = value
        if kind == "map":
            return {k: _ovsdb_value(v) for k, v in inner}
        if kind == "set":
            return [_ovsdb_value(v) for v in inner]
        if kind in ("uuid", "named-uuid"):
            return inner
    return value


def rows(ovs: PrivateOvs, table: str, *conditions: str) -> list[dict[str, Any]]:
    """Rows of a table (``ovs-vsctl find``), columns as plain Python values."""
    out = ovs.vsctl("--format=json", "find", table, *conditions, wait=False)
    data = json.loads(out)
    headings = data["headings"]
    return [
        {h: _ovsdb_value(v) for h, v in zip(headings, row, strict=True)} for row in data["data"]
    ]


def interface(ovs: PrivateOvs, name: str) -> dict[str, Any] | None:
    found = rows(ovs, "Interface", f"name={name}")
    return found[0] if found else None


def port(ovs: PrivateOvs, name: str) -> dict[str, Any] | None:
    found = rows(ovs, "Port", f"name={name}")
    return found[0] if found else None


def bridge_ports(ovs: PrivateOvs, bridge: str) -> list[str]:
    out = ovs.vsctl("list-ports", bridge, wait=False)
    return sorted(line for line in out.splitlines() if line)


def numanet_ports(ovs: PrivateOvs) -> list[dict[str, Any]]:
    """Every Port row carrying numanet's owner tag."""
    return rows(ovs, "Port", "external_ids:numanet-owner=numanet")


def make_slot(root: str | Path, device_id: str) -> Path:
    """A slot directory ``<root>/s/<device_id>`` as the device plugin lays it out."""
    slot = Path(root) / "s" / device_id
    slot.mkdir(parents=True, exist_ok=True, mode=0o750)
    return slot


@contextmanager
def seqpacket_listener(path: str | Path) -> Iterator[socket.socket]:
    """A container-side memif socket (AF_UNIX SOCK_SEQPACKET, as memif uses) listening at path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.bind(str(path))
        sock.listen(4)
        yield sock
    finally:
        sock.close()
        Path(path).unlink(missing_ok=True)


_HUGE_2M = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")


@contextmanager
def hugetlbfs(mountpoint: str | Path, pages: int) -> Iterator[Path]:
    """A private 2 MiB hugetlbfs at ``mountpoint`` with at least ``pages`` free pages.

    Reserves only the shortfall (other users of the machine may hold pages) and gives
    back exactly what it added, then unmounts. Skips when the kernel refuses.
    """
    mount_dir = Path(mountpoint)
    mount_dir.mkdir(parents=True, exist_ok=True)
    nr_path, free_path = _HUGE_2M / "nr_hugepages", _HUGE_2M / "free_hugepages"
    if not nr_path.exists():
        pytest.skip("this kernel offers no 2 MiB hugepages")
    added = max(0, pages - int(free_path.read_text()))
    if added:
        nr_path.write_text(str(int(nr_path.read_text()) + added))
    try:
        if int(free_path.read_text()) < pages:
            pytest.skip(f"could not reserve {pages} free 2 MiB hugepages")
        done = subprocess.run(
            ["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", str(mount_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount hugetlbfs at {mount_dir}: {done.stderr.strip()}")
        try:
            yield mount_dir
        finally:
            subprocess.run(["umount", str(mount_dir)], check=False)
    finally:
        if added:
            nr_path.write_text(str(max(0, int(nr_path.read_text()) - added)))


def free_hugepages_2m() -> int:
    return int((_HUGE_2M / "free_hugepages").read_text())
