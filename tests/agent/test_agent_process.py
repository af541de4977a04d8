"""``numanet agent`` as a real process: bad config exit, status, SIGTERM clean shutdown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.deviceplugin import short_dir
from helpers.sysfs import two_nodes

from demo.kubelet_standin import ContainerSpec, KubeletStandin

NUMANET = [sys.executable, "-m", "agent.cli"]
REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
hugepages: {{pageSize: 2Mi, path: {hugepages}}}
vswitches:
  ovs: {{db: "unix:{root}/no-ovs/db.sock"}}
pools:
  - {{name: vhostuser-ovs, kind: vhost-user, vswitch: ovs, slotsPerNode: 2}}
  - {{name: nic, kind: dpdk-nic, selectors: {{drivers: [vfio-pci]}}}}
"""


@pytest.fixture
def root() -> Iterator[Path]:
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def agent_args(root: Path) -> list[str]:
    return ["agent", "--config", str(root / "config.yaml"), "--kubelet-dir",
            str(root / "kubelet"), "--run-dir", str(root / "run"), "--sysfs", str(root / "sys"),
            "--devinfo-dir", str(root / "devinfo"), "--metrics-address", "127.0.0.1:0",
            "--no-udev", "--refresh-interval", "0.2"]


def run_numanet(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NUMANET, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def test_bad_config_stops_the_agent_with_one_line_and_exit_2(root: Path) -> None:
    (root / "config.yaml").write_text("pools:\n  - {name: x, kind: memif, vswitch: ovs, "
                                      "slotsPerNode: lots}\n")
    result = run_numanet(*agent_args(root))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"numanet agent: {root}/config.yaml: pools[0].slotsPerNode: must be an integer "
        'between 1 and 4096, got "lots"')
    missing = run_numanet("agent", "--config", str(root / "nope.yaml"))
    assert missing.returncode == 2
    assert "nope.yaml: file not found" in missing.stderr


def test_status_without_an_agent_says_so(root: Path) -> None:
    result = run_numanet("status", "--run-dir", str(root / "run"))
    assert result.returncode == 1
    assert "no running agent" in result.stderr


def test_sigterm_removes_sockets_devinfo_and_status(root: Path) -> None:
    two_nodes(root / "sys")
    (root / "hugepages").mkdir()
    (root / "config.yaml").write_text(CONFIG.format(hugepages=root / "hugepages", root=root))
    plugin_dir = root / "kubelet" / "device-plugins"
    kubelet = KubeletStandin(plugin_dir).start()
    log_path = root / "agent.log"
    with open(log_path, "w") as log:
        agent = subprocess.Popen([*NUMANET, *agent_args(root)], stdout=log, stderr=log, cwd=REPO)
    try:
        assert kubelet.wait_for(lambda: len(kubelet.accepted_registrations()) == 2, timeout=20), \
            log_path.read_text()
        assert kubelet.wait_for(lambda: len(kubelet.devices("numanet.io/nic")) == 3)
        kubelet.wait_for(lambda: len(kubelet.devices("numanet.io/vhostuser-ovs")) == 4)
        kubelet.admit_pod("ns", "p", [ContainerSpec("c", {"numanet.io/nic": 1})])
        # OVS is not running here: the socket slots are listed, Unhealthy.
        vhost = kubelet.devices("numanet.io/vhostuser-ovs")
        assert len(vhost) == 4 and not any(d.healthy for d in vhost.values())
        assert len(list((root / "devinfo").iterdir())) == 1

        # The agent rewrites status.json shortly after a change: wait for the allocation.
        status_file = root / "run" / "status.json"
        assert kubelet.wait_for(lambda: '"used": 1' in status_file.read_text())
        status = run_numanet("status", "--run-dir", str(root / "run"))
        assert status.returncode == 0, status.stderr
        assert "vhostuser-ovs" in status.stdout and "UNHEALTHY" in status.stdout
        lines = [line.split() for line in status.stdout.splitlines()]
        assert ["nic", "numanet.io/nic", "0", "2", "2", "1", "1", "yes"] in lines, status.stdout
        assert (root / "run" / "cni.sock").exists()  # the CNI service runs in the agent
        document = json.loads(run_numanet("status", "--json", "--run-dir",
                                          str(root / "run")).stdout)
        assert document["agentRunning"] is True and document["pid"] == agent.pid

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=15) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        kubelet.stop()
    output = log_path.read_text()
    assert "agent stopped" in output
    assert "kubelet call=Allocate pool=nic device_ids=0000:3b:01.0 numa=0 duration_ms=" in output
    assert sorted(os.listdir(plugin_dir)) == []  # our sockets gone (and the stand-in's)
    assert list((root / "devinfo").iterdir()) == []
    assert not (root / "run" / "status.json").exists()
    assert not (root / "run" / "cni.sock").exists()
    # What was allocated is remembered for the next start.
    assert [p.name for p in (root / "run" / "allocated").iterdir()] == ["0000:3b:01.0.json"]
