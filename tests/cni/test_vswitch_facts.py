"""What a pool and the vSwitch decide about a port, carried to OVS and to the container:
ring and buffer sizes, and the memif queue count a replay must keep current in
numanet.json. Real OVS-DPDK, real host-local, the real shim."""

from __future__ import annotations

import json
import os

import pytest
from helpers.ovs import interface

from cni.commands import replay
from vswitch.api import TAG_MEMIF_QUEUES
from vswitch.ovs.ports import memif_queue_pairs

from .conftest import POOL_SIZES

pytestmark = pytest.mark.ovs


def _config(slot) -> dict:
    return json.loads((slot.host_dir / "numanet.json").read_text())


def test_pool_ring_and_buffer_sizes_reach_the_ovs_memif_and_the_container(cni_bed, pod_netns):
    memif = cni_bed.slots.device_id("memifr-ovs", 0)
    vhost = cni_bed.slots.device_id("vhostr-ovs", 0)
    ring, buffer = POOL_SIZES["memifr-ovs"]
    vhost_ring, _ = POOL_SIZES["vhostr-ovs"]
    for dev in (memif, vhost):
        cni_bed.allocate("default", "pod-a", dev)
    a = cni_bed.cni("ADD", cni_bed.netconf(memif), "rs1", ifname="net1", netns_path=pod_netns.path)
    b = cni_bed.cni("ADD", cni_bed.netconf(vhost), "rs1", ifname="net2", netns_path=pod_netns.path)
    assert a.rc == 0 and b.rc == 0, (a.stdout, b.stdout)
    by_kind = {p["external_ids"]["numanet-kind"]: p for p in cni_bed.ports()}

    # memif: DPDK's net_memif takes the ring size as log2 and the buffer size in bytes;
    # ovs-vswitchd accepted the devargs (the plug waits for the port to be applied).
    row = interface(cni_bed.ovs, by_kind["memif"]["name"])
    devargs = row["options"]["dpdk-devargs"].split(",")
    assert f"rsize={ring.bit_length() - 1}" in devargs and f"bsize={buffer}" in devargs
    assert row["ofport"] > 0
    memif_cfg = _config(cni_bed.slots.slot(memif))
    assert (memif_cfg["ringSize"], memif_cfg["bufferSize"]) == (ring, buffer)

    # vhost-user: the container's virtio driver sizes the rings; OVS gets no size option
    # (n_rxq_desc/n_txq_desc are for DPDK ethdev ports), the container gets the pool's.
    vrow = interface(cni_bed.ovs, by_kind["vhost-user"]["name"])
    assert set(vrow["options"]) == {"vhost-server-path"}
    vhost_cfg = _config(cni_bed.slots.slot(vhost))
    assert vhost_cfg["ringSize"] == vhost_ring and "bufferSize" not in vhost_cfg

    assert cni_bed.cni("DEL", cni_bed.netconf(memif), "rs1", ifname="net1").rc == 0
    assert cni_bed.cni("DEL", cni_bed.netconf(vhost), "rs1", ifname="net2").rc == 0
    cni_bed.assert_clean()


def _other_pmd_mask(current: str) -> str:
    """A pmd-cpu-mask with another number of PMD threads on CPUs this process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    count = bin(int(current, 16)).count("1")
    wanted = 2 if count != 2 else 1
    if len(cpus) < wanted:
        pytest.skip("needs two CPUs to change the number of OVS PMD threads")
    return hex(sum(1 << cpu for cpu in cpus[:wanted]))


@pytest.fixture
def pmd_mask(cni_bed):
    """Set the session OVS's pmd-cpu-mask in a test; the old one comes back after."""
    old = cni_bed.ovs.vsctl("get", "Open_vSwitch", ".", "other_config:pmd-cpu-mask",
                            wait=False).strip().strip('"')

    def set_mask(mask: str) -> None:
        cni_bed.ovs.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-cpu-mask={mask}")

    yield old, set_mask
    set_mask(old)


def test_replay_rewrites_numanet_json_when_ovs_plugs_the_memif_with_another_queue_count(
        cni_bed, pod_netns, pmd_mask):
    old_mask, set_mask = pmd_mask
    dev = cni_bed.slots.device_id("memif-ovs", 3)
    slot = cni_bed.allocate("default", "pod-a", dev)
    add = cni_bed.cni("ADD", cni_bed.netconf(dev), "q1", netns_path=pod_netns.path)
    assert add.rc == 0, add.stdout
    path = slot.host_dir / "numanet.json"
    before = _config(slot)
    assert before["queues"] == memif_queue_pairs(old_mask)
    written = os.stat(path)

    # OVS kept the port: the replay plugs nothing new and leaves the file alone.
    assert replay(cni_bed.context, "ovs") == 1
    same = os.stat(path)
    assert (same.st_ino, same.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)

    # OVS comes back with other PMD threads and without the port (a new database): the
    # replay plugs it again, OVS asks for another queue count, and the container is told.
    new_mask = _other_pmd_mask(old_mask)
    set_mask(new_mask)
    [port] = cni_bed.ports()
    cni_bed.ovs.vsctl("del-port", port["name"])
    assert replay(cni_bed.context, "ovs") == 1
    [port] = cni_bed.ports()
    assert port["external_ids"][TAG_MEMIF_QUEUES] == str(memif_queue_pairs(new_mask))
    after = _config(slot)
    assert after["queues"] == memif_queue_pairs(new_mask) != before["queues"]
    assert {k: v for k, v in after.items() if k != "queues"} == \
        {k: v for k, v in before.items() if k != "queues"}  # IPs, MAC, paths: as the ADD wrote

    assert cni_bed.cni("DEL", cni_bed.netconf(dev), "q1").rc == 0
    cni_bed.assert_clean()


def test_replay_tells_the_container_the_new_queue_count_of_a_memif_port_ovs_kept(
        cni_bed, pod_netns, pmd_mask):
    old_mask, set_mask = pmd_mask
    dev = cni_bed.slots.device_id("memif-ovs", 4)
    slot = cni_bed.allocate("default", "pod-a", dev)
    try:
        add = cni_bed.cni("ADD", cni_bed.netconf(dev), "q2", netns_path=pod_netns.path)
        assert add.rc == 0, add.stdout
        new_mask = _other_pmd_mask(old_mask)
        set_mask(new_mask)
        replay(cni_bed.context, "ovs")
        assert _config(slot)["queues"] == memif_queue_pairs(new_mask)
    finally:
        assert cni_bed.cni("DEL", cni_bed.netconf(dev), "q2").rc == 0
