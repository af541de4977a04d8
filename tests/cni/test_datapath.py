"""Packets through two slots numanet plumbed with the CNI, on one OVS bridge.

The container side is one dpdk-testpmd with two virtio_user devices, started the way a
container sees its slots: in its own mount namespace where each slot directory is bind
mounted at the path numanet.json names (``/run/numanet/<pool>/<deviceID>``), using the
socket path and MAC from numanet.json. OVS forwards with its default NORMAL flow (MAC
learning), as numanet leaves the bridge; testpmd's mac mode sends each port's packets to
the other port's MAC, so traffic crosses the bridge in both directions.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time

import pytest
from helpers.ovs import eventually, interface
from helpers.testpmd import TestPmd, memif, require_testpmd, virtio_user

pytestmark = [pytest.mark.ovs, pytest.mark.datapath]

RUN_SECONDS = 2.0
MIN_PACKETS = 10_000  # tx_first injects 16 bursts of 32 per port; forwarding multiplies them


def _in_container_mounts(pmd: TestPmd, mounts: dict[str, str]) -> None:
    """Run ``pmd`` in a private mount namespace with ``host dir -> container dir`` binds.

    A fresh tmpfs on /run keeps the container paths (and DPDK's runtime files) out of the
    host, as a container's own /run would.
    """
    script = ["mount --make-rprivate /", "mount -t tmpfs numanet-test /run"]
    for host, container in mounts.items():
        script += [f"mkdir -p {shlex.quote(container)}",
                   f"mount --bind {shlex.quote(host)} {shlex.quote(container)}"]
    script.append('exec "$@"')
    pmd.cmd = ["unshare", "--mount", "sh", "-c", "; ".join(script), "sh", *pmd.cmd]


def _port_counters(bed) -> dict[int, tuple[int, int]]:
    """Live (rx, tx) packets per OpenFlow port, read from ovs-vswitchd (the database's
    statistics column is only refreshed every few seconds)."""
    out = subprocess.run(["ovs-ofctl", "dump-ports", bed.bridge], env=bed.ovs.env,
                         capture_output=True, text=True, check=True).stdout
    return {int(m[1]): (int(m[2]), int(m[3]))
            for m in re.finditer(r"port\s+(\d+): rx pkts=(\d+).*?tx pkts=(\d+)", out, re.S)}


def _add_two_pods(bed, pool: str, container: str, netns_path: str
                  ) -> tuple[list[str], list[dict], dict[str, str]]:
    """Two pods, one slot of ``pool`` each, ADDed: (device IDs, their numanet.json, the
    slot directory mounts ``host dir -> container dir`` a runtime would make)."""
    devices = [bed.slots.device_id(pool, i) for i in (0, 1)]
    configs, mounts = [], {}
    for i, device_id in enumerate(devices):
        slot = bed.allocate("default", f"pod-{i}", device_id)
        add = bed.cni("ADD", bed.netconf(device_id), f"{container}{i}", netns_path=netns_path,
                      pod=("default", f"pod-{i}"))
        assert add.rc == 0, add.stdout
        config = json.loads((slot.host_dir / "numanet.json").read_text())
        assert config["socketPath"] == add.json["interfaces"][0]["socketPath"]
        configs.append(config)
        mounts[str(slot.host_dir)] = str(slot.container_dir)
    return devices, configs, mounts


def test_two_cni_plumbed_slots_pass_packets_both_ways(cni_bed, pod_netns):
    require_testpmd()
    devices, configs, mounts = _add_two_pods(cni_bed, "vhostuser-ovs", "dp", pod_netns.path)
    # The container creates the socket, OVS connects.
    assert [c["mode"] for c in configs] == ["server", "server"]
    assert all(not c["socketPath"].startswith(str(cni_bed.base)) for c in configs)

    macs = [c["mac"] for c in configs]
    vdevs = [virtio_user(i, c["socketPath"], server=True) + f",mac={c['mac']}"
             for i, c in enumerate(configs)]
    pmd = TestPmd(vdevs, forward_mode="mac",
                  extra_args=(f"--eth-peer=0,{macs[1]}", f"--eth-peer=1,{macs[0]}"))
    _in_container_mounts(pmd, mounts)
    ports = [p["name"] for p in cni_bed.ports()]
    with pmd:
        pmd.wait_link_up()
        for name in ports:
            eventually(lambda n=name: interface(cni_bed.ovs, n)["link_state"] == "up", timeout=15)
        ofports = [interface(cni_bed.ovs, n)["ofport"] for n in ports]
        before = _port_counters(cni_bed)
        pmd.start(tx_first=16)
        time.sleep(RUN_SECONDS)
        stats = pmd.stop()
        after = _port_counters(cni_bed)
    print(f"\ncni datapath: testpmd {stats}")
    # The container saw traffic on both interfaces, in and out ...
    for port in (0, 1):
        assert stats[port].rx >= MIN_PACKETS and stats[port].tx >= MIN_PACKETS
    # ... and OVS carried it both ways: each of its two ports received and sent packets.
    for ofport in ofports:
        received = after[ofport][0] - before.get(ofport, (0, 0))[0]
        sent = after[ofport][1] - before.get(ofport, (0, 0))[1]
        assert received >= MIN_PACKETS and sent >= MIN_PACKETS, (ofport, before, after)

    for i, device_id in enumerate(devices):
        assert cni_bed.cni("DEL", cni_bed.netconf(device_id), f"dp{i}",
                           pod=("default", f"pod-{i}")).rc == 0
    cni_bed.assert_clean()


def _pmd_threads(bed) -> int:
    return bin(int(bed.ovs.pmd_cpu_mask, 16)).count("1")


def test_memif_slots_tell_the_container_its_queue_count_and_pass_packets(cni_bed, pod_netns):
    """OVS, the memif master, sends on one queue per PMD thread plus one (its main
    thread): numanet.json must say so, and a container opening that many queue pairs
    (and no more is needed) gets packets both ways."""
    require_testpmd()
    devices, configs, mounts = _add_two_pods(cni_bed, "memif-ovs", "mq", pod_netns.path)
    assert all(c["kind"] == "memif" and c["role"] == "slave" for c in configs)
    # The count is an integer and matches what OVS was configured with, and what the
    # backend tagged the port with.
    expected = _pmd_threads(cni_bed) + 1
    assert [c["queues"] for c in configs] == [expected, expected]
    assert all(type(c["queues"]) is int for c in configs)
    tags = {p["name"]: p["external_ids"] for p in cni_bed.ports()}
    assert sorted(t["numanet-memif-queues"] for t in tags.values()) == [str(expected)] * 2
    # The device-info spec's memif section has no queue count: numanet adds none there.
    assert all("queues" not in json.dumps(p) for p in cni_bed.devinfo_files())

    queues = configs[0]["queues"]
    vdevs = [memif(i, c["socketPath"], role="client", memif_id=c["memifId"]) + f",mac={c['mac']}"
             for i, c in enumerate(configs)]
    macs = [c["mac"] for c in configs]
    pmd = TestPmd(vdevs, forward_mode="mac",
                  extra_args=(f"--rxq={queues}", f"--txq={queues}",
                              f"--eth-peer=0,{macs[1]}", f"--eth-peer=1,{macs[0]}"))
    _in_container_mounts(pmd, mounts)
    with pmd:
        pmd.wait_link_up()
        pmd.start(tx_first=16)
        time.sleep(RUN_SECONDS)
        stats = pmd.stop()
    print(f"\ncni memif datapath: testpmd {stats}")
    for port in (0, 1):
        assert stats[port].rx >= MIN_PACKETS and stats[port].tx >= MIN_PACKETS, stats

    for i, device_id in enumerate(devices):
        assert cni_bed.cni("DEL", cni_bed.netconf(device_id), f"mq{i}",
                           pod=("default", f"pod-{i}")).rc == 0
    cni_bed.assert_clean()
