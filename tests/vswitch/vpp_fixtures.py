"""Fixtures for the VPP backend's unit tests: a stand-in VPP and a backend connected to it.

A test module loads them with ``pytest_plugins = ["tests.vswitch.vpp_fixtures"]``
(``vswitch/conftest.py`` belongs to the OVS tests); the names all say vpp. ``is_socket``
is what the tests ask of the files VPP creates and leaves.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.vswitch.vpp_fake import FakeVpp
from tests.vswitch.vpp_timing import FAST
from vswitch.api import Owner, PortSpec
from vswitch.vpp import VppVSwitch


def is_socket(path: str | Path) -> bool:
    """A unix socket is there (not followed through a symlink)."""
    return os.path.lexists(path) and stat.S_ISSOCK(os.lstat(path).st_mode)


@pytest.fixture
def vpp_dir() -> Iterator[Path]:
    """A short private directory: unix socket paths stop at 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="nnvpp-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_vpp(vpp_dir: Path) -> Iterator[FakeVpp]:
    fake = FakeVpp(str(vpp_dir / "api.sock"))
    fake.start()
    try:
        yield fake
    finally:
        fake.crash()
    assert not fake.unhandled, (
        f"the backend sent requests the fake VPP cannot answer: {fake.unhandled}"
    )


@pytest.fixture
def vpp_switch(fake_vpp: FakeVpp) -> Iterator[VppVSwitch]:
    backend = VppVSwitch(fake_vpp.api_socket, **FAST)  # type: ignore[arg-type]
    backend.connect(timeout=5.0)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def vpp_spec(vpp_dir: Path) -> Callable[..., PortSpec]:
    """PortSpec for a slot whose directory exists, as the device plugin leaves it."""

    def make(
        device_id: str,
        kind: str = "memif",
        container_role: str = "slave",
        network: str = "net-a",
        **fields: object,
    ) -> PortSpec:
        slot_dir = vpp_dir / "s" / device_id
        slot_dir.mkdir(parents=True, exist_ok=True)
        fields.setdefault("owner", Owner("ns1", f"pod-{device_id}", "c0ffee", "net1"))
        socket_path = fields.pop("socket_path", str(slot_dir / "sock"))
        return PortSpec(
            device_id=device_id,
            kind=kind,  # type: ignore[arg-type]
            container_role=container_role,
            socket_path=socket_path,  # type: ignore[arg-type]
            network=network,
            **fields,  # type: ignore[arg-type]
        )

    return make
