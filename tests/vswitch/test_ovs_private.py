"""PrivateOvs: a real ovsdb-server + ovs-vswitchd-dpdk under one directory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.ovs import hugetlbfs, require_ovs, short_tmpdir

import demo.private_ovs as private
from demo.private_ovs import OvsNotInstalled, OvsStartError, PrivateOvs

pytestmark = pytest.mark.ovs


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def base_dir():
    require_ovs()
    path = short_tmpdir("nnpriv-")
    yield Path(path)
    subprocess.run(["rm", "-rf", path], check=False)


def test_start_and_stop_leave_nothing(base_dir):
    ovs = PrivateOvs(base_dir)
    with ovs:
        pids = [ovs.ovsdb_pid, ovs.vswitchd_pid]
        assert all(pid and _alive(pid) for pid in pids)
        assert ovs.vsctl("get", "Open_vSwitch", ".", "dpdk_initialized") == "true"
        extra = ovs.vsctl("get", "Open_vSwitch", ".", "other_config:dpdk-extra")
        for flag in ("--no-pci", "--no-huge", "--legacy-mem", f"--file-prefix={ovs.file_prefix}"):
            assert flag in extra
        assert ovs.vsctl("get", "Open_vSwitch", ".", "other_config:pmd-maxsleep") == '"10000"'
        assert ovs.dpdk_runtime_dir.is_dir()
        # The environment drives the stock tools to this instance.
        shown = subprocess.run(
            ["ovs-vsctl", "show"], env=ovs.env, capture_output=True, text=True, check=True
        ).stdout
        assert ovs.vsctl("get", "Open_vSwitch", ".", "_uuid") in shown
    assert not any(_alive(pid) for pid in pids)
    assert not ovs.dpdk_runtime_dir.exists()
    assert not Path(ovs.db_socket).exists()


def test_two_instances_do_not_collide(base_dir):
    with PrivateOvs(base_dir / "a") as first, PrivateOvs(base_dir / "b") as second:
        assert first.file_prefix != second.file_prefix
        first.vsctl("add-br", "bra", "--", "set", "bridge", "bra", "datapath_type=netdev")
        assert second.vsctl("list-br") == ""
        assert first.vsctl("list-br") == "bra"


def test_leftover_of_a_killed_run_is_stopped(base_dir):
    # A run that dies without stopping its daemons (SIGKILL, crash): they keep running.
    script = textwrap.dedent(f"""
        import os
        from demo.private_ovs import PrivateOvs
        ovs = PrivateOvs({str(base_dir)!r}).start()
        print(ovs.ovsdb_pid, ovs.vswitchd_pid, flush=True)
        os._exit(0)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    ).stdout
    old = [int(pid) for pid in out.split()]
    assert all(_alive(pid) for pid in old)

    with PrivateOvs(base_dir) as ovs:
        assert not any(_alive(pid) for pid in old)
        assert ovs.vsctl("get", "Open_vSwitch", ".", "dpdk_initialized") == "true"


def test_failed_start_reports_the_log_and_cleans_up(base_dir):
    ovs = PrivateOvs(base_dir, lcore_mask=hex(1 << 60))  # a CPU this machine does not have
    with pytest.raises(OvsStartError) as info:
        ovs.start()
    message = str(info.value)
    assert "ovs-vswitchd-dpdk did not start" in message
    assert "EAL" in message and "ovs-vswitchd.log" in message  # the log tail is included
    assert ovs.ovsdb_pid is None and ovs.vswitchd_pid is None
    assert not ovs.dpdk_runtime_dir.exists()
    assert not Path(ovs.db_socket).exists()


def test_missing_packages_say_what_to_install(base_dir, monkeypatch):
    monkeypatch.setattr(private, "VSWITCHD_DPDK", str(base_dir / "no-such-ovs-vswitchd-dpdk"))
    with pytest.raises(
        OvsNotInstalled, match="apt-get install -y --no-install-recommends openvswitch-switch-dpdk"
    ):
        PrivateOvs(base_dir).start()


def test_hugepage_dir_must_be_hugetlbfs(base_dir):
    with pytest.raises(ValueError, match="is not a hugetlbfs mount"):
        PrivateOvs(base_dir, hugepage_dir=base_dir).start()


def test_too_long_directory_is_refused():
    with pytest.raises(ValueError, match="unix socket path limit"):
        PrivateOvs("/tmp/" + "x" * 120).start()


def _hugetlb_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("HugetlbPages:"):
            return int(line.split()[1])
    return 0


def test_with_hugepages_gives_them_back(base_dir):
    # The machine's free-page count moves with other users; count vswitchd's own pages.
    with hugetlbfs(base_dir / "huge", pages=160) as huge:
        ovs = PrivateOvs(base_dir / "ovs", hugepage_dir=huge, socket_mem_mb=256)
        with ovs:
            extra = ovs.vsctl("get", "Open_vSwitch", ".", "other_config:dpdk-extra")
            assert "--no-huge" not in extra
            assert ovs.vsctl("get", "Open_vSwitch", ".", "other_config:dpdk-socket-mem") == (
                '"256"'
            )
            pid = ovs.vswitchd_pid
            assert pid is not None
            # OVS runs DPDK --in-memory here: 256 MiB of 2 MiB pages mapped, no files.
            assert _hugetlb_kb(pid) >= 256 * 1024
            assert not list(huge.iterdir())
        assert not _alive(pid)  # memfd-backed pages go back with the process
        assert not list(huge.iterdir())
        assert not os.path.exists(ovs.dpdk_runtime_dir)
