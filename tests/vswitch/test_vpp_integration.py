"""The VPP backend against a real VPP (VPP is not installable on the CI machine).

Run on a machine with VPP (24.02 or later, memif plugin loaded), as root:

    NUMANET_VPP_API_SOCKET=/run/vpp/api.sock NUMANET_VPP_RESTART_CMD="systemctl restart vpp" \\
        .venv/bin/pytest -m vpp tests/vswitch/test_vpp_integration.py

- ``NUMANET_VPP_API_SOCKET``: VPP's API socket (``socksvr { socket-name ... }``); without
  it every test here is skipped.
- ``NUMANET_VPP_RESTART_CMD``: a shell command that restarts that VPP (``systemctl
  restart vpp``, ``docker restart vpp``...); without it the replay test is skipped.
- ``NUMANET_VPP_API_DIR``: VPP's ``share/vpp/api`` directory, for a VPP older than 23.10
  that cannot hand out its definitions.
- ``NUMANET_VPP_SLOT_DIR``: where slot directories go (default: a new directory under
  /tmp); it must be the same path for VPP, e.g. when VPP runs in a container.

The tests use bridge-domain and memif socket IDs from 990000 and pool names ``nntest*``,
and remove everything they create.
"""

from __future__ import annotations

import os
import queue
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from vpp_papi import VPPApiClient

from vswitch.api import Owner, PortSpec
from vswitch.vpp import ReplayReport, VppVSwitch

API_SOCKET = os.environ.get("NUMANET_VPP_API_SOCKET", "")
RESTART_CMD = os.environ.get("NUMANET_VPP_RESTART_CMD", "")
API_DIR = os.environ.get("NUMANET_VPP_API_DIR") or None
BASE = 990000

pytestmark = [
    pytest.mark.vpp,
    pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning"),
    pytest.mark.skipif(
        not API_SOCKET,
        reason="no VPP here: set NUMANET_VPP_API_SOCKET to a running VPP's API socket "
        "(e.g. /run/vpp/api.sock) to run the VPP integration tests",
    ),
]


@pytest.fixture(scope="module")
def vpp_socket() -> str:
    if not os.path.exists(API_SOCKET) or not stat.S_ISSOCK(os.stat(API_SOCKET).st_mode):
        pytest.skip(f"NUMANET_VPP_API_SOCKET={API_SOCKET} is not a unix socket; is VPP running?")
    return API_SOCKET


@pytest.fixture
def slot_root() -> Iterator[Path]:
    parent = os.environ.get("NUMANET_VPP_SLOT_DIR", "/tmp")
    root = Path(tempfile.mkdtemp(prefix="nnvpp-", dir=parent))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def backend(vpp_socket: str) -> Iterator[VppVSwitch]:
    switch = VppVSwitch(
        vpp_socket,
        api_dir=API_DIR,
        memif_socket_id_base=BASE,
        bridge_domain_id_base=BASE,
        watch_interval=0.2,
        backoff=(0.2, 2.0),
    )
    switch.connect(timeout=10.0)
    try:
        yield switch
    finally:
        for device_id in switch.remembered():
            try:
                switch.unplug(device_id)
            except Exception:  # noqa: BLE001 - clean up as much as possible
                pass
        switch.close()


@contextmanager
def observing(vpp_socket: str) -> Iterator[Any]:
    """A separate vpp_papi client: what VPP holds, not what the backend believes."""
    if API_DIR:
        client = VPPApiClient(server_address=vpp_socket, apidir=API_DIR)
    else:
        client = VPPApiClient(server_address=vpp_socket, bootstrapapi=True)
    client.connect("numanet-test-observer")
    try:
        yield client
    finally:
        client.disconnect()


@pytest.fixture
def observer(vpp_socket: str) -> Iterator[Any]:
    with observing(vpp_socket) as client:
        yield client


def spec(root: Path, pool: str, kind: str, role: str, **fields: Any) -> PortSpec:
    device_id = f"{pool}-n0-{uuid.uuid4().int % 100000:05d}"
    slot = root / device_id
    slot.mkdir()
    return PortSpec(
        device_id=device_id,
        kind=kind,  # type: ignore[arg-type]
        container_role=role,
        socket_path=str(slot / "sock"),
        network=fields.pop("network", f"nntest-{os.getpid()}"),
        owner=Owner("it", f"pod-{device_id}"),
        **fields,
    )


def by_tag(observer: Any) -> dict[str, Any]:
    return {str(d.tag): d for d in observer.api.sw_interface_dump() if d.tag}


def test_plug_inspect_unplug_memif_and_vhost_user(backend, observer, slot_root):
    specs = [
        spec(slot_root, "nntestm", "memif", "slave", memif_id=1),
        spec(slot_root, "nntestm", "memif", "master", memif_id=2),
        spec(slot_root, "nntestv", "vhost-user", "client"),
        spec(slot_root, "nntestv", "vhost-user", "server"),
        spec(slot_root, "nntesti", "memif", "slave", memif_mode="ip", ip_address="10.254.77.1/30"),
    ]
    assert backend.health().healthy
    ports = {s.device_id: backend.plug(s) for s in specs}

    seen = by_tag(observer)
    for s in specs:
        assert s.device_id in seen, f"VPP has no interface tagged {s.device_id}"
        assert int(seen[s.device_id].flags) & 1, f"{s.device_id} is not admin up"
    memifs = {int(d.sw_if_index): d for d in observer.api.memif_dump()}
    sockets = {
        int(d.socket_id): str(d.socket_filename) for d in observer.api.memif_socket_filename_dump()
    }
    for s in specs[:2]:
        memif = memifs[int(seen[s.device_id].sw_if_index)]
        assert sockets[int(memif.socket_id)] == s.socket_path
        assert int(memif.role) == (0 if s.container_role == "slave" else 1)
    vhosts = {int(d.sw_if_index): d for d in observer.api.sw_interface_vhost_user_dump()}
    for s in specs[2:4]:
        vhost = vhosts[int(seen[s.device_id].sw_if_index)]
        assert str(vhost.sock_filename) == s.socket_path
        assert bool(vhost.is_server) is (s.container_role == "client")
    bds = [
        d
        for d in observer.api.bridge_domain_dump()
        if str(d.bd_tag) == f"numanet:{specs[0].network}"
    ]
    assert len(bds) == 1
    members = {int(m.sw_if_index) for m in bds[0].sw_if_details}
    assert members == {int(seen[s.device_id].sw_if_index) for s in specs[:4]}
    # VPP made the listening sockets of the masters/servers.
    for s in (specs[0], specs[2]):
        assert stat.S_ISSOCK(os.stat(s.socket_path).st_mode)
    assert {p.device_id for p in backend.ports()} >= set(ports)

    for s in specs:
        assert backend.unplug(s.device_id) is True
        assert backend.unplug(s.device_id) is False

    assert not set(by_tag(observer)) & {s.device_id for s in specs}
    remaining = {int(d.socket_id) for d in observer.api.memif_socket_filename_dump()}
    assert not {sid for sid in remaining if sid >= BASE}
    assert not [
        d for d in observer.api.bridge_domain_dump() if str(d.bd_tag).startswith("numanet:nntest")
    ]
    for s in specs:
        assert not os.path.lexists(s.socket_path), f"{s.socket_path} left behind"


@pytest.mark.skipif(
    not RESTART_CMD,
    reason="set NUMANET_VPP_RESTART_CMD to a command that restarts this VPP "
    "(e.g. 'systemctl restart vpp') to test the replay after a VPP restart",
)
def test_vpp_restart_replays_every_slot(backend, vpp_socket, slot_root):
    specs = [
        spec(slot_root, "nntestm", "memif", "slave"),
        spec(slot_root, "nntestv", "vhost-user", "client"),
        spec(slot_root, "nntestv", "vhost-user", "server"),
    ]
    for s in specs:
        backend.plug(s)
    reports: queue.Queue[ReplayReport] = queue.Queue()
    backend.on_reconnect(reports.put)

    subprocess.run(RESTART_CMD, shell=True, check=True, timeout=120)

    report = reports.get(timeout=120)
    assert report.failed == {}
    assert sorted(report.replugged) == sorted(s.device_id for s in specs)
    with observing(vpp_socket) as client:
        seen = by_tag(client)
    assert {s.device_id for s in specs} <= set(seen)
    assert all(int(seen[s.device_id].flags) & 1 for s in specs)
    assert backend.health().healthy
