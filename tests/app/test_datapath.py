"""Packets through OVS-DPDK with dpdk-testpmd started on exactly what ``numanet-app
dpdk-args`` printed for a pod whose slots are real ports.

The pod view is built as numanet builds it (slot directories, numanet.json from the CNI's
writer, network-status, the environment); the slots' sockets are ports numanet's OVS
backend plugged on a private OVS-DPDK, with flows between the two. numanet-app (the
installed console script) runs with the machine's own CPUs and NUMA nodes; testpmd runs
with its words, in a mount namespace where the slot directories sit at the container's
paths, and forwards port 0 <-> port 1 (io mode) while OVS sends each port's packets to the
other: every packet counted crossed OVS.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.ovs import (
    eventually,
    hugetlbfs,
    interface,
    short_tmpdir,
    unique_bridge,
)
from helpers.podview import PodView
from helpers.testpmd import TESTPMD, TestPmd, in_container_mounts, line_buffered, require_testpmd

from demo.private_ovs import PrivateOvs
from deviceplugin import naming
from vswitch.api import TAG_MEMIF_QUEUES, Owner, PortSpec, VSwitchError
from vswitch.ovs.backend import OvsVSwitch

pytestmark = [pytest.mark.ovs, pytest.mark.datapath]

RUN_SECONDS = 2.0
MIN_PACKETS = 10_000  # tx_first injects 16 bursts of 32 per port; forwarding multiplies them
NUMANET_APP = str(Path(sys.executable).parent / "numanet-app")
MACS = ("02:00:00:aa:00:01", "02:00:00:aa:00:02")


@dataclass
class Bench:
    ovs: PrivateOvs
    switch: OvsVSwitch
    bridge: str
    root: Path  # short: socket paths stop at 107 bytes


@pytest.fixture
def bench(private_ovs: PrivateOvs) -> Iterator[Bench]:
    bridge = unique_bridge("a")
    root = Path(short_tmpdir("nnapp-"))
    switch = OvsVSwitch(private_ovs.db, bridge, timeout=5.0)
    switch.connect()
    try:
        yield Bench(private_ovs, switch, bridge, root)
    finally:
        try:
            for plugged in switch.ports():
                if plugged.network == bridge:
                    switch.unplug(plugged.device_id)
        except VSwitchError:
            pass
        switch.close()
        private_ovs.vsctl("--if-exists", "del-br", bridge, wait=False)
        shutil.rmtree(root, ignore_errors=True)


def _plug_pod(bench: Bench, pod: PodView, pool: str, kind: str, role: str) -> list[str]:
    """Two slots of ``pool`` for one pod: OVS ports first (OVS fixes a memif's queue count),
    then what the CNI writes; flows between the ports. Returns the OVS port names."""
    names, ofports = [], []
    for i in range(2):
        device_id = naming.slot_device_id(pool, 0, i)
        host_dir = pod.slot_dir(pool, device_id)
        host_dir.mkdir(parents=True, mode=0o750)
        plugged = bench.switch.plug(PortSpec(
            device_id=device_id, kind=kind, container_role=role,  # type: ignore[arg-type]
            socket_path=str(host_dir / naming.SOCKET_NAME), network=bench.bridge,
            owner=Owner("default", "pod-a", "cid-a", f"net{i + 1}"), mac=MACS[i]))
        queues = plugged.tags.get(TAG_MEMIF_QUEUES)
        pod.slot(pool, kind, role, node=0, index=i, ifname=f"net{i + 1}", mac=MACS[i],
                 queues=int(queues) if queues else None)
        names.append(plugged.port_name)
        ofports.append(interface(bench.ovs, plugged.port_name)["ofport"])
    _ofctl(bench, "del-flows", bench.bridge)
    _ofctl(bench, "add-flow", bench.bridge, f"in_port={ofports[0]},actions=output:{ofports[1]}")
    _ofctl(bench, "add-flow", bench.bridge, f"in_port={ofports[1]},actions=output:{ofports[0]}")
    return names


def _ofctl(bench: Bench, *args: str) -> str:
    return subprocess.run(["ovs-ofctl", *args], env=bench.ovs.env, check=True,
                          capture_output=True, text=True).stdout


def _dpdk_args(pod: PodView, prefix: str) -> list[str]:
    """What a container shell gets from $(numanet-app dpdk-args --testpmd ...)."""
    pod.write()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **pod.env}
    done = subprocess.run([NUMANET_APP, *pod.args("dpdk-args", "--sysfs", "/sys", "--testpmd",
                                                  "--file-prefix", prefix)],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    print(f"\nnumanet-app dpdk-args: {done.stdout.strip()}")
    return done.stdout.split()  # the shell's word splitting


def _forward(bench: Bench, pod: PodView, ports: list[str], words: list[str], prefix: str):
    pmd = TestPmd([], file_prefix=prefix)
    pmd.ports = 2
    cmd = line_buffered([TESTPMD, *words, "-i", "--total-num-mbufs=8192", "--forward-mode=io"])
    mounts = {str(s.host_dir): str(s.container_dir) for s in pod.slots}
    pmd.cmd = in_container_mounts(cmd, mounts)
    with pmd:
        pmd.wait_link_up()
        for name in ports:
            eventually(lambda n=name: interface(bench.ovs, n)["link_state"] == "up", timeout=15)
        pmd.start(tx_first=16)
        time.sleep(RUN_SECONDS)
        stats = pmd.stop()
    print(f"testpmd: {stats}")
    for port in (0, 1):
        assert stats[port].rx >= MIN_PACKETS and stats[port].tx >= MIN_PACKETS, stats
    # ... and OVS carried them: both of its flows (port A -> B, B -> A) counted packets.
    flows = _ofctl(bench, "dump-flows", bench.bridge)
    counts = sorted((int(n) for n in re.findall(r"n_packets=(\d+)", flows)), reverse=True)
    assert len(counts) >= 2 and counts[1] >= MIN_PACKETS, flows


@pytest.mark.parametrize("pool, kind, role", [
    ("vhostuser-ovs", "vhost-user", "server"),
    ("vhostc-ovs", "vhost-user", "client"),
    ("memif-ovs", "memif", "slave"),
])
def test_testpmd_on_numanet_apps_words_passes_packets_through_ovs(bench, pool, kind, role):
    require_testpmd()
    pod = PodView(bench.root / "pod")
    ports = _plug_pod(bench, pod, pool, kind, role)
    prefix = f"nnapp-{os.getpid()}-{kind}-{role}"
    words = _dpdk_args(pod, prefix)
    cpus = sorted(os.sched_getaffinity(0))
    socket = f"/run/numanet/{pool}/{pool}-n0-000/sock"
    first = (f"--vdev=virtio_user0,path={socket}{',server=1' if role == 'server' else ''}"
             if kind == "vhost-user" else
             f"--vdev=net_memif0,role=client,id=0,socket={socket},socket-abstract=no")
    assert words[:6] == ["-l", f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 else str(cpus[0]),
                         f"--file-prefix={prefix}", "--no-huge", "-m", "512"]
    assert any(w.startswith(first) and w.endswith(f"mac={MACS[0]}") for w in words), words
    _forward(bench, pod, ports, words, prefix)


def test_with_hugepages_on_the_slots_node(bench):
    """--huge-dir, --socket-mem and --single-file-segments as printed work for vhost-user."""
    require_testpmd()
    pod = PodView(bench.root / "pod")
    with ExitStack() as stack:
        mount = str(stack.enter_context(hugetlbfs(bench.root / "huge", 160)))
        pod.hugepages(mount, "2M", request_mib=256)
        ports = _plug_pod(bench, pod, "vhostuser-ovs", "vhost-user", "server")
        prefix = f"nnapp-{os.getpid()}-huge"
        words = _dpdk_args(pod, prefix)
        assert words[3:6] == [f"--huge-dir={mount}", "--socket-mem=256",
                              "--single-file-segments"]
        try:
            _forward(bench, pod, ports, words, prefix)
        finally:
            for page in Path(mount).glob(f"{prefix}map_*"):  # DPDK leaves its page files
                page.unlink()
