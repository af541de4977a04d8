"""``numanet demo`` end to end, as a person runs it: a subprocess, its output, and the
machine afterwards.

Each run gets its own short directory, so its netns names, DPDK prefixes and OVS never
meet another test's. What "nothing left" means is checked here independently of the
demo's own proof: no process, mount, netns, DPDK runtime dir or directory of the run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo import procs
from demo.hugepages import SYSFS_DIR, mount_points
from demo.journal import Journal
from demo.layout import POD_NAMES, Layout
from demo.netns import exists as netns_exists
from demo.private_ovs import PrivateOvs, missing_ovs_parts

pytestmark = [pytest.mark.ovs, pytest.mark.datapath]

NUMANET = [sys.executable, "-m", "agent.cli", "demo"]
RUN_TIMEOUT = 120


def _require_parts() -> None:
    missing = missing_ovs_parts()
    if shutil.which("dpdk-testpmd") is None:
        missing.append("dpdk-testpmd")
    if not os.access("/usr/lib/cni/host-local", os.X_OK):
        missing.append("/usr/lib/cni/host-local")
    if missing:
        pytest.skip(f"demo needs {', '.join(missing)}: apt-get install -y "
                    "--no-install-recommends openvswitch-switch-dpdk dpdk-dev "
                    "containernetworking-plugins")
    if os.geteuid() != 0:
        pytest.skip("the demo runs as root")


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    """A short directory name of this test's own (the demo creates and removes it)."""
    _require_parts()
    path = Path(f"/run/nndt-{secrets.token_hex(3)}")
    yield path
    if path.exists():  # only after a failed test: never leave it to the next run
        subprocess.run([*NUMANET, "--dir", str(path), "--seconds", "0.1", "--json"],
                       capture_output=True, timeout=RUN_TIMEOUT, check=False)
        shutil.rmtree(path, ignore_errors=True)


def _run(directory: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run([*NUMANET, "--dir", str(directory), "--json", *args],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"stdout is not only JSON (exit {done.returncode}):\n{done.stdout}\n"
                    f"stderr:\n{done.stderr}")
    return done.returncode, doc, done.stderr


def _nr_hugepages() -> int:
    return int((SYSFS_DIR / "nr_hugepages").read_text())


def _assert_nothing_left(directory: Path) -> None:
    layout = Layout(directory)
    ovs_runtime = PrivateOvs(layout.ovs_dir).dpdk_runtime_dir
    assert not directory.exists()
    assert procs.holders([directory]) == []
    assert [m for m in mount_points() if m.startswith(f"{directory}/")] == []
    assert [n for n in map(layout.netns, POD_NAMES) if netns_exists(n)] == []
    assert [d for d in [*layout.dpdk_runtime_dirs(), ovs_runtime] if d.exists()] == []


def test_demo_passes_packets_both_ways_and_leaves_nothing(demo_dir: Path) -> None:
    pages_before = _nr_hugepages()
    started = time.monotonic()
    code, doc, stderr = _run(demo_dir, "--seconds", "2")
    elapsed = time.monotonic() - started

    assert code == 0, f"{doc.get('error')}\n{stderr}"
    assert doc["ok"] is True and doc["error"] is None
    for direction in ("aToB", "bToA"):
        assert doc["traffic"][direction]["pps"] > 0, doc["traffic"]
        assert doc["traffic"][direction]["packets"] > 0, doc["traffic"]
    # The pods' interfaces come from the numanet.json the CNI wrote in each slot directory.
    layout = Layout(demo_dir)
    macs = set()
    for pod in doc["pods"]:
        slot = layout.run_dir / "s" / pod["deviceID"]
        assert pod["socket"] == str(slot / "sock")
        assert pod["config"] == str(slot / "numanet.json")
        assert pod["containerSocket"] == f"/run/numanet/vhostuser-ovs/{pod['deviceID']}/sock"
        assert pod["ips"] and pod["ips"][0].startswith("10.56.0.")
        macs.add(pod["mac"])
    assert len(doc["pods"]) == 2 and len(macs) == 2
    assert {p["deviceID"] for p in doc["pods"]} == {"vhostuser-ovs-n0-000",
                                                    "vhostuser-ovs-n0-001"}
    node0 = doc["numa"][0]["pools"][0]
    assert (node0["pool"], node0["used"], node0["free"]) == ("vhostuser-ovs", 2, 6)
    # Teardown: what it says it cleaned, and what we find.
    cleaned = doc["cleanup"]["cleaned"]
    assert cleaned["processes"] == 5  # 2 testpmd, agent, ovsdb-server, ovs-vswitchd
    assert cleaned["ports"] == 2 and cleaned["IPAM leases"] == 2 and cleaned["netns"] == 2
    assert doc["cleanup"]["left"] == []
    assert doc["cleanup"]["line"].endswith("nothing left")
    _assert_nothing_left(demo_dir)
    pages = doc["hugepages"]
    if pages["mode"] == "hugepages" and not doc["cleanup"]["notes"]:
        # (a note means another user changed nr_hugepages meanwhile: then only our share
        # went back, which give_back's own test covers)
        assert pages["original"] == pages_before
        assert pages["restoredTo"] == pages_before
    assert [s["name"] for s in doc["steps"]][-1] == "teardown"
    assert elapsed < 60


def test_memif_pair_passes_packets_both_ways_through_ovs(demo_dir: Path) -> None:
    """Two memif pods: OVS is the memif master and sends on one queue per PMD thread plus
    one, so each pod's testpmd must open the queue pairs numanet.json names, or receive
    nothing; packets counted in both directions prove it did."""
    started = time.monotonic()
    code, doc, stderr = _run(demo_dir, "--pods", "memif,memif", "--seconds", "2")
    elapsed = time.monotonic() - started

    assert code == 0, f"{doc.get('error')}\n{stderr}"
    for direction in ("aToB", "bToA"):
        assert doc["traffic"][direction]["packets"] > 0, doc["traffic"]
    pmd_threads = len(doc["ovs"]["pmdCpus"])
    assert len(doc["pods"]) == 2
    for pod in doc["pods"]:
        assert (pod["kind"], pod["role"]) == ("memif", "slave")
        assert pod["resource"] == "numanet.io/memif-ovs"
        assert pod["containerSocket"] == f"/run/numanet/memif-ovs/{pod['deviceID']}/sock"
        assert pod["queues"] == pmd_threads + 1  # read from numanet.json by the pod
    apps = next(s for s in doc["steps"] if s["name"] == "pods' apps")
    assert f"memif: {pmd_threads + 1} queue pairs" in apps["detail"]
    used = {p["pool"]: p["used"] for p in doc["numa"][0]["pools"]}
    assert used == {"vhostuser-ovs": 0, "memif-ovs": 2}
    cleaned = doc["cleanup"]["cleaned"]
    assert cleaned["ports"] == 2 and cleaned["IPAM leases"] == 2 and cleaned["processes"] == 5
    assert doc["cleanup"]["left"] == []
    _assert_nothing_left(demo_dir)
    assert elapsed < 60


def test_killed_demo_is_cleaned_up_by_the_next_run(demo_dir: Path) -> None:
    first = subprocess.Popen([*NUMANET, "--dir", str(demo_dir), "--json", "--seconds", "60"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stderr is not None
        for line in first.stderr:  # steps go to stderr in --json mode, each as it ends
            assert "FAILED" not in line, line
            if "pods' apps" in line:  # testpmd runs; traffic is next
                break
        else:
            pytest.fail("the first demo ended before its pods' applications started")
        time.sleep(0.5)
        layout = Layout(demo_dir)
        journal = Journal.load(layout.journal)
        assert journal is not None and journal.owner.pid == first.pid
        # While it runs, a second demo in the same directory is refused, naming it.
        code, doc, _ = _run(demo_dir, "--seconds", "1")
        assert code == 2 and f"pid {first.pid}" in doc["error"]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        if first.stderr:
            first.stderr.close()
    assert all(netns_exists(layout.netns(p)) for p in POD_NAMES)  # really left behind
    assert any(p.alive() for p in journal.processes)

    code, doc, stderr = _run(demo_dir, "--seconds", "1")

    assert code == 0, f"{doc.get('error')}\n{stderr}"
    assert doc["recoveredLeftovers"] and "process" in doc["recoveredLeftovers"]
    assert "2 netns" in doc["recoveredLeftovers"]
    assert not any(p.alive() for p in journal.processes)
    assert doc["traffic"]["aToB"]["pps"] > 0 and doc["traffic"]["bToA"]["pps"] > 0
    _assert_nothing_left(demo_dir)


def test_missing_package_names_the_apt_command(demo_dir: Path) -> None:
    code, doc, stderr = _run(demo_dir, "--testpmd", "/nonexistent/dpdk-testpmd")

    assert code == 2
    assert "/nonexistent/dpdk-testpmd" in doc["error"]
    assert "apt-get install -y --no-install-recommends dpdk-dev" in doc["error"]
    assert "FAILED preflight" in stderr
    assert not demo_dir.exists()


def test_not_root_says_so(demo_dir: Path) -> None:
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *NUMANET, "--dir", str(demo_dir)],
                          capture_output=True, text=True, timeout=60, check=False)
    if "Permission denied" in done.stderr:
        pytest.skip(f"the venv is not readable by nobody: {done.stderr.strip()[:200]}")
    assert done.returncode == 2
    assert "must run as root" in done.stdout and "sudo make demo" in done.stdout
    assert not demo_dir.exists()


def test_foreign_process_in_the_directory_is_named_and_left_alone(demo_dir: Path) -> None:
    # A killed demo's directory (journal with a dead owner) that someone else now uses.
    demo_dir.mkdir(mode=0o700)
    dead = subprocess.Popen(["true"])
    owner = procs.identify(dead.pid)
    dead.wait()
    Journal(demo_dir / "journal.json", owner).save()
    squatter = subprocess.Popen(["sleep", "60"], cwd=demo_dir)
    try:
        code, doc, _ = _run(demo_dir, "--seconds", "1")

        assert code == 2
        assert f"pid {squatter.pid} (sleep)" in doc["error"]
        assert f"kill {squatter.pid}" in doc["error"] and "--dir" in doc["error"]
        assert squatter.poll() is None  # not ours to stop
    finally:
        squatter.kill()
        squatter.wait()
        shutil.rmtree(demo_dir, ignore_errors=True)


def test_directory_that_is_not_a_demo_directory_is_refused(demo_dir: Path) -> None:
    demo_dir.mkdir(mode=0o700)
    (demo_dir / "precious.txt").write_text("mine")
    try:
        code, doc, _ = _run(demo_dir, "--seconds", "1")

        assert code == 2 and "not a demo directory" in doc["error"]
        assert (demo_dir / "precious.txt").read_text() == "mine"
    finally:
        shutil.rmtree(demo_dir, ignore_errors=True)
