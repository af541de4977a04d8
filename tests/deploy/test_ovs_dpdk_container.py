"""deploy/ovs-dpdk/ovs-dpdk.sh, the OVS-DPDK DaemonSet's entrypoint, run for real: Debian's
ovsdb-server and ovs-vswitchd-dpdk (no hugepages) in a private network namespace, the
ConfigMap as a directory of other_config files, SIGTERM as the kubelet sends it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.deploy import DEPLOY
from helpers.ovs import require_ovs, short_tmpdir

pytestmark = pytest.mark.ovs

SCRIPT = DEPLOY / "ovs-dpdk" / "ovs-dpdk.sh"


class Container:
    """One run of the entrypoint, with the environment the DaemonSet gives it."""

    def __init__(self, base: Path, bridge: str = "br-numanet", **env: str) -> None:
        self.base = base
        self.run_dir = base / "run"
        self.conf_dir = base / "other_config"
        self.env = {**os.environ, "OVS_RUNDIR": str(self.run_dir), "OVS_DBDIR": str(base / "db"),
                    "OVS_OTHER_CONFIG_DIR": str(self.conf_dir), "OVS_BRIDGE": bridge, **env}
        self.proc: subprocess.Popen[str] | None = None
        self.log = base / "container.log"

    def start(self) -> None:
        # A private network namespace: the netdev datapath's tap device is per namespace.
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(["unshare", "--net", "sh", str(SCRIPT), "run"],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         text=True)

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(SCRIPT), "check"], env=self.env, capture_output=True,
                              text=True, timeout=30)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.check().returncode != 0:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"not ready in {timeout}s: {self.log.read_text()}"
            time.sleep(0.2)

    def vsctl(self, *args: str) -> str:
        return subprocess.run(["ovs-vsctl", f"--db=unix:{self.run_dir}/db.sock", "--timeout=10",
                               *args], check=True, capture_output=True, text=True).stdout.strip()

    def other_config(self) -> dict[str, str]:
        table = json.loads(self.vsctl("--format=json", "--columns=other_config", "list",
                                      "Open_vSwitch"))
        return dict(table["data"][0][0][1])

    def pids(self) -> list[int]:
        out = []
        for name in ("ovsdb-server.pid", "ovs-vswitchd.pid"):
            try:
                out.append(int((self.run_dir / name).read_text()))
            except (FileNotFoundError, ValueError):
                pass
        return out

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def container_base() -> Iterator[Path]:
    require_ovs()
    base = Path(short_tmpdir("nnovsct-"))
    prefix = f"nnovsct{os.getpid()}{base.name[-6:]}"
    (base / "other_config").mkdir()
    conf = {
        "dpdk-init": "true",
        "dpdk-lcore-mask": "0x1",
        "pmd-cpu-mask": "0x2",
        "pmd-maxsleep": "10000",
        "per-port-memory": "true",
        # Spaces survive: the script quotes values for ovs-vsctl.
        "dpdk-extra": f"--no-pci --no-telemetry --no-huge --legacy-mem -m 1024 "
                      f"--file-prefix={prefix}",
        # Neither commas nor a double quote break the value.
        "numanet-test-note": 'a,b "quoted" c\\d',
    }
    for key, value in conf.items():
        (base / "other_config" / key).write_text(value)
    (base / "other_config" / "Not_A_Key").write_text("x")
    yield base
    for pidfile in (base / "run").glob("*.pid"):
        try:
            pid = int(pidfile.read_text())
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        except (ValueError, OSError):
            pass
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)


def test_starts_configures_stops_and_keeps_ports_across_restarts(container_base: Path):
    ct = Container(container_base)
    ct.start()
    try:
        ct.wait_ready()
        config = ct.other_config()
        for key in ("dpdk-init", "pmd-cpu-mask", "pmd-maxsleep", "dpdk-extra",
                    "numanet-test-note"):
            assert config[key] == (container_base / "other_config" / key).read_text(), key
        assert "Not_A_Key" not in config
        assert "ignoring" in ct.log.read_text()
        assert ct.vsctl("get", "Open_vSwitch", ".", "dpdk_initialized") == "true"
        assert ct.vsctl("get", "bridge", "br-numanet", "datapath_type") == "netdev"
        # A port the agent would own, to see it survive the restart.
        ct.vsctl("add-port", "br-numanet", "vhu-test", "--", "set", "Interface", "vhu-test",
                 "type=dpdkvhostuserclient",
                 f"options:vhost-server-path={container_base}/vhu-test.sock")
        pids = ct.pids()
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        rc = ct.stop()
    assert rc == 0, ct.log.read_text()
    assert not any(_alive(p) for p in pids), "a daemon outlived SIGTERM"

    # New ConfigMap: one key changed, one dropped. The restart applies both.
    (container_base / "other_config" / "numanet-test-note").unlink()
    (container_base / "other_config" / "pmd-maxsleep").write_text("5000")
    again = Container(container_base)
    again.start()
    try:
        again.wait_ready()
        config = again.other_config()
        assert config["pmd-maxsleep"] == "5000"
        assert "numanet-test-note" not in config
        assert "vhu-test" in again.vsctl("list-ports", "br-numanet").split()
    finally:
        assert again.stop() == 0


def test_a_vswitchd_that_cannot_start_ends_the_container_and_leaves_nothing(
        container_base: Path):
    ct = Container(container_base, OVS_VSWITCHD="/bin/false")
    ct.start()
    assert ct.proc is not None
    rc = ct.proc.wait(timeout=60)
    assert rc != 0
    assert not any(_alive(p) for p in ct.pids())
    assert "stopping (status" in ct.log.read_text()
    assert ct.check().returncode != 0


def test_vswitchd_dying_ends_the_container_so_the_kubelet_restarts_it(container_base: Path):
    ct = Container(container_base)
    ct.start()
    assert ct.proc is not None
    try:
        ct.wait_ready()
        db_pid, vswitchd_pid = ct.pids()
        os.kill(vswitchd_pid, signal.SIGKILL)
        rc = ct.proc.wait(timeout=20)
    finally:
        if ct.proc.poll() is None:
            ct.stop()
    assert rc == 1
    assert "a daemon exited unexpectedly" in ct.log.read_text()
    assert not _alive(db_pid)
