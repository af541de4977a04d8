"""Parallel calls, as a node starting many pods at once makes them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers.netns import netns

from vswitch.api import TAG_CONTAINER_ID

pytestmark = pytest.mark.ovs

PODS = 16


def test_sixteen_parallel_adds_then_dels(cni_bed):
    devs = [cni_bed.slots.device_id("vhostuser-ovs", i) for i in range(PODS)]
    for i, dev in enumerate(devs):
        cni_bed.allocate("default", f"pod-{i}", dev)
    with netns("nncni") as ns, ThreadPoolExecutor(PODS) as pool:
        def add(i: int):
            return cni_bed.cni("ADD", cni_bed.netconf(devs[i]), f"par{i}", netns_path=ns.path,
                               pod=("default", f"pod-{i}"))

        results = list(pool.map(add, range(PODS)))
        assert [r.rc for r in results] == [0] * PODS, [r.stdout for r in results if r.rc]
        ips = {r.json["ips"][0]["address"] for r in results}
        macs = {r.json["interfaces"][0]["mac"] for r in results}
        assert len(ips) == PODS and len(macs) == PODS
        ports = cni_bed.ports()
        assert sorted(p["external_ids"][TAG_CONTAINER_ID] for p in ports) == \
            sorted(f"par{i}" for i in range(PODS))
        assert len(cni_bed.leases()) == PODS and len(cni_bed.container_files()) == PODS

        def delete(i: int):
            return cni_bed.cni("DEL", cni_bed.netconf(devs[i]), f"par{i}",
                               pod=("default", f"pod-{i}"))

        deleted = list(pool.map(delete, range(PODS)))
        assert [r.rc for r in deleted] == [0] * PODS, [r.stdout for r in deleted if r.rc]
    cni_bed.assert_clean()
    assert len(cni_bed.context.locks) == 0  # no lock entry outlives its calls
    # The calls' workers wait for the next ones; no call is left in flight.
    service = cni_bed.service
    assert not service._active and 1 <= len(service._workers) <= PODS


def test_calls_one_after_another_reuse_one_worker(cni_bed):
    service = cni_bed.service
    for _ in range(5):
        assert cni_bed.cni("VERSION", b"{}").rc == 0  # answered by the shim itself
        call = cni_bed.cni("STATUS", cni_bed.netconf("vhostuser-ovs-n0-000"))
        assert call.rc == 0, call.stdout
    assert len(service._workers) == 1 and not service._active


def test_one_device_raced_by_many_adds_is_plugged_once(cni_bed, pod_netns):
    """Eight sandboxes of one pod ADD the same device at once: each takes it over from the
    one before, and in the end exactly one port, lease, record and file exist, all
    belonging to the same (last) attachment."""
    dev = cni_bed.slots.device_id("vhostuser-ovs", 20)
    cni_bed.allocate("default", "pod-a", dev)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda i: cni_bed.cni("ADD", cni_bed.netconf(dev), f"race{i}",
                                  netns_path=pod_netns.path), range(8)))
    assert [r.rc for r in results] == [0] * 8, [r.stdout for r in results if r.rc]
    [port] = cni_bed.ports()
    [record] = cni_bed.context.records.all()
    assert port["external_ids"][TAG_CONTAINER_ID] == record.container_id
    assert len(cni_bed.leases()) == 1 and len(cni_bed.container_files()) == 1
    assert cni_bed.cni("DEL", cni_bed.netconf(dev), record.container_id).rc == 0
    cni_bed.assert_clean()
