"""The NUMA nodes VPP polls on: its threads' CPUs (show_threads) through numa/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import numa
from tests.vswitch.vpp_fake import FakeThread, FakeVpp
from tests.vswitch.vpp_timing import FAST
from vswitch.vpp import VppVSwitch

pytest_plugins = ["tests.vswitch.vpp_fixtures"]  # fake_vpp, vpp_dir, vpp_spec, vpp_switch
pytestmark = pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")

UNPINNED = 0xFFFFFFFF


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """Two NUMA nodes: CPUs 0-1 on node 0, CPUs 2-3 on node 1."""
    nodes = tmp_path / "sys" / "devices" / "system" / "node"
    for node, cpus in ((0, "0-1"), (1, "2-3")):
        (nodes / f"node{node}").mkdir(parents=True)
        (nodes / f"node{node}" / "cpulist").write_text(cpus + "\n")
    (nodes / "online").write_text("0-1\n")
    return tmp_path / "sys"


@pytest.fixture
def vpp_with_threads(vpp_dir: Path, request: pytest.FixtureRequest) -> Iterator[VppVSwitch]:
    fake = FakeVpp(str(vpp_dir / "api.sock"), threads=request.param)
    fake.start()
    backend = VppVSwitch(fake.api_socket, **FAST)  # type: ignore[arg-type]
    backend.connect()
    try:
        yield backend
    finally:
        backend.close()
        fake.crash()


MAIN_ON_0 = FakeThread(0, "vpp_main", "", 0)


@pytest.mark.parametrize(
    ("vpp_with_threads", "nodes"),
    [
        # Workers poll; the main thread's CPU does not count then.
        (
            (
                MAIN_ON_0,
                FakeThread(1, "vpp_wk_0", "workers", 2),
                FakeThread(2, "vpp_wk_1", "workers", 3),
            ),
            {1},
        ),
        (
            (
                MAIN_ON_0,
                FakeThread(1, "vpp_wk_0", "workers", 1),
                FakeThread(2, "vpp_wk_1", "workers", 2),
            ),
            {0, 1},
        ),
        # No workers: the main thread polls.
        ((FakeThread(0, "vpp_main", "", 3),), {1}),
        # Unpinned workers say nothing; the main thread's CPU is what is known.
        ((MAIN_ON_0, FakeThread(1, "vpp_wk_0", "workers", UNPINNED)), {0}),
    ],
    indirect=["vpp_with_threads"],
    ids=["workers-on-node1", "workers-on-both", "main-only", "unpinned-workers"],
)
def test_nodes_come_from_the_polling_threads_cpus(vpp_with_threads, sysfs, nodes):
    assert vpp_with_threads.poll_numa_nodes(numa.discover(sysfs)) == frozenset(nodes)


@pytest.mark.parametrize(
    "vpp_with_threads",
    [(FakeThread(0, "vpp_main", "", UNPINNED),), (FakeThread(0, "vpp_main", "", 9),)],
    indirect=True,
    ids=["nothing-pinned", "cpu-unknown-to-sysfs"],
)
def test_none_when_vpp_cannot_tell(vpp_with_threads, sysfs):
    assert vpp_with_threads.poll_numa_nodes(numa.discover(sysfs)) is None
