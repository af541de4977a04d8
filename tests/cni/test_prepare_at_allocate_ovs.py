"""Ports prepared at Allocate and claimed by the pod's CNI ADD, with the real OVS-DPDK.

The real agent (in this process), the kubelet stand-in calling Allocate over gRPC, the
pod-resources stand-in, the real shim and host-local IPAM, pods in real network
namespaces. What is asserted is read back from OVS with ovs-vsctl: the Port and
Interface rows (their UUIDs tell a claimed port from one made anew), their tags, VLAN.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
from helpers.metrics import sample
from helpers.netns import netns
from helpers.ovs import eventually, interface, private_ovs
from helpers.ovs_node import POOL, SLOTS, OvsNode, ok, ovs_node, prepared_port, running_node

from cni import errors, reconcile
from cni.reconcile import release_unheld
from demo.private_ovs import PrivateOvs
from vswitch.api import TAG_CONTAINER_ID, TAG_POD_NAME, TAG_PREPARED
from vswitch.ovs.ports import port_name

__all__ = ["ovs_node", "private_ovs"]
pytestmark = pytest.mark.ovs


def outcomes() -> dict[str, float]:
    """numanet_prepared_ports_total of the pool, by outcome (the agent runs in this process)."""
    return {o: sample("numanet_prepared_ports_total", pool=POOL, outcome=o)
            for o in ("prepared", "failed", "claimed", "removed")}


def test_allocate_prepares_the_port_and_add_claims_it_in_place(ovs_node: OvsNode):
    node = ovs_node
    before = outcomes()
    device_id = node.admit("pod-a")
    prepared = prepared_port(node, device_id)
    # Made for the allocation, owned by no pod yet.
    assert prepared["external_ids"][TAG_POD_NAME] == ""
    assert prepared["external_ids"][TAG_CONTAINER_ID] == ""
    iface_before = interface(node.ovs, port_name(device_id))
    assert iface_before is not None

    with netns("nnpa") as ns:
        conf = node.netconf("pod-a")
        add = ok(node.cni("ADD", conf, "pod-a", ns.path))
        claimed = node.port_row(device_id)
        assert claimed is not None
        # The same Port and Interface rows: claimed, not made anew, and ovs-vswitchd
        # kept the DPDK port it had set up (same ofport).
        assert claimed["_uuid"] == prepared["_uuid"]
        iface_after = interface(node.ovs, port_name(device_id))
        assert iface_after is not None and iface_after["_uuid"] == iface_before["_uuid"]
        assert iface_after["ofport"] == iface_before["ofport"]
        ids = claimed["external_ids"]
        assert TAG_PREPARED not in ids
        assert ids[TAG_POD_NAME] == "pod-a" and ids[TAG_CONTAINER_ID] == "c-pod-a"
        mac = add.json["interfaces"][0]["mac"]
        assert iface_after["external_ids"]["attached-mac"] == mac
        ok(node.cni("CHECK", {**conf, "prevResult": add.json}, "pod-a", ns.path))
        ok(node.cni("DEL", conf, "pod-a"))
    assert node.port_uuids() == {}
    assert node.records() == [] and node.leases() == []
    assert outcomes() == {**before, "prepared": before["prepared"] + 1,
                          "claimed": before["claimed"] + 1}


def test_add_with_another_vlan_claims_in_place_and_teaches_the_pool(ovs_node: OvsNode):
    node = ovs_node
    first = node.admit("pod-a")
    prepared = prepared_port(node, first)
    assert prepared["tag"] in (None, [])
    with netns("nnpa") as ns_a, netns("nnpa") as ns_b:
        conf_a = {**node.netconf("pod-a"), "vlan": 120}
        ok(node.cni("ADD", conf_a, "pod-a", ns_a.path))
        plugged = node.port_row(first)
        # The same port, on the network's VLAN by the time the ADD answered.
        assert plugged is not None and plugged["_uuid"] == prepared["_uuid"]
        assert plugged["tag"] == 120

        # The pool's next port is prepared the way its network last asked.
        second = node.admit("pod-b")
        assert second != first
        prepared_b = prepared_port(node, second)
        assert prepared_b["tag"] == 120
        # A network on another bridge cannot use it: the port is made anew there.
        other = f"{node.bridge[:12]}x"
        conf_b = {**node.netconf("pod-b"), "bridge": other}
        try:
            ok(node.cni("ADD", conf_b, "pod-b", ns_b.path))
            made = node.port_row(second)
            assert made is not None and made["_uuid"] != prepared_b["_uuid"]
            assert made["tag"] in (None, [])
            assert made["external_ids"][TAG_POD_NAME] == "pod-b"
            ok(node.cni("DEL", conf_b, "pod-b"))
        finally:
            node.ovs.vsctl("--if-exists", "del-br", other, wait=False)
        ok(node.cni("DEL", conf_a, "pod-a"))
    assert node.port_uuids() == {} and node.leases() == []


def test_another_pod_cannot_claim_a_prepared_port(ovs_node: OvsNode):
    node = ovs_node
    device_id = node.admit("pod-a")
    prepared = prepared_port(node, device_id)
    node.admit("pod-b")
    with netns("nnpa") as ns:
        # pod-b names pod-a's device: the kubelet did not allocate it to pod-b.
        stolen = {**node.netconf("pod-b"), "deviceID": device_id}
        refused = node.cni("ADD", stolen, "pod-b", ns.path)
        assert refused.rc != 0
        assert refused.json["code"] == errors.DEVICE_NOT_ALLOCATED, refused.json
        kept = node.port_row(device_id)
        assert kept is not None and kept["_uuid"] == prepared["_uuid"]
        assert kept["external_ids"][TAG_PREPARED] == "true"
        assert kept["external_ids"][TAG_POD_NAME] == ""
        assert node.records() == [] and node.leases() == []


def test_gc_removes_the_prepared_port_of_a_pod_that_never_got_its_network(ovs_node: OvsNode):
    node = ovs_node
    device_id = node.admit("pod-gone")
    prepared_port(node, device_id)
    removed = outcomes()["removed"]
    # The pod is deleted before its sandbox came up: no ADD, no DEL, only the runtime's GC.
    node.kubelet.remove_pod("default", "pod-gone")
    conf = {**node.netconf("pod-gone"), "cni.dev/valid-attachments": []}
    ok(node.cni("GC", conf, "-"))
    assert node.port_row(device_id) is None
    assert device_id not in node.agent.allocator.all()
    assert outcomes()["removed"] == removed + 1


def test_gc_keeps_the_prepared_port_of_an_allocated_device(ovs_node: OvsNode):
    node = ovs_node
    device_id = node.admit("pod-waiting")
    prepared = prepared_port(node, device_id)
    conf = {**node.netconf("pod-waiting"), "cni.dev/valid-attachments": []}
    ok(node.cni("GC", conf, "-"))
    kept = node.port_row(device_id)
    assert kept is not None and kept["_uuid"] == prepared["_uuid"]


def test_restarted_agent_removes_prepared_ports_no_allocation_holds(ovs_node: OvsNode):
    node = ovs_node
    kept_id = node.admit("pod-kept")
    dropped_id = node.admit("pod-dropped")
    kept = prepared_port(node, kept_id)
    prepared_port(node, dropped_id)
    # The allocation went (as CNI GC releases it) but the agent stopped before it removed
    # the port: the next agent finds a prepared port that nothing allocated.
    node.agent.allocator.release(dropped_id)
    node.harness.stop_agent()
    node.harness.start_agent()
    eventually(lambda: node.port_row(dropped_id) is None, timeout=10)
    still = node.port_row(kept_id)
    assert still is not None and still["_uuid"] == kept["_uuid"]


def test_without_prepare_at_allocate_the_add_makes_the_port(private_ovs: PrivateOvs):  # noqa: F811
    with running_node(private_ovs, prepare=False) as plain:
        device_id = plain.admit("pod-a")
        time.sleep(0.5)  # a prepared port shows up within tens of ms
        assert plain.port_row(device_id) is None
        with netns("nnpa") as ns:
            conf = plain.netconf("pod-a")
            ok(plain.cni("ADD", conf, "pod-a", ns.path))
            port = plain.port_row(device_id)
            assert port is not None and TAG_PREPARED not in port["external_ids"]
            ok(plain.cni("DEL", conf, "pod-a"))
        assert plain.port_uuids() == {}


def test_a_restarted_agent_prepares_ports_the_way_the_recorded_networks_ask(ovs_node: OvsNode):
    node = ovs_node
    with netns("nnpa") as ns:
        first = node.admit("pod-a")
        prepared_port(node, first)
        conf = {**node.netconf("pod-a"), "vlan": 77}
        ok(node.cni("ADD", conf, "pod-a", ns.path))
        node.harness.stop_agent()
        node.harness.start_agent()
        # The new agent learnt nothing in memory; the attachment it recorded tells the shape.
        second = node.admit("pod-b")
        assert prepared_port(node, second)["tag"] == 77
        ok(node.cni("DEL", conf, "pod-a"))


def test_parallel_admissions_and_adds_each_claim_their_own_port(ovs_node: OvsNode):
    node = ovs_node
    pods = [f"pod-{i}" for i in range(SLOTS)]
    with ExitStack() as stack:
        spaces = {pod: stack.enter_context(netns("nnpa")) for pod in pods}
        # The kubelet admits them one after another; the ADDs come while the ports are
        # still being prepared (4 workers), all at once, as pods on a busy node do.
        devices = {pod: node.admit(pod) for pod in pods}
        confs = {pod: node.netconf(pod) for pod in pods}
        with ThreadPoolExecutor(len(pods)) as pool:
            adds = dict(zip(pods, pool.map(
                lambda pod: node.cni("ADD", confs[pod], pod, spaces[pod].path), pods),
                strict=True))
        for pod in pods:
            ok(adds[pod])
            row = node.port_row(devices[pod])
            assert row is not None and row["external_ids"][TAG_POD_NAME] == pod
            assert TAG_PREPARED not in row["external_ids"]
        assert len(node.port_uuids()) == len(pods)
        macs = {adds[pod].json["interfaces"][0]["mac"] for pod in pods}
        assert len(macs) == len(pods)
        with ThreadPoolExecutor(len(pods)) as pool:
            for call in pool.map(lambda pod: node.cni("DEL", confs[pod], pod), pods):
                ok(call)
    assert node.port_uuids() == {} and node.records() == [] and node.leases() == []


def test_the_agent_releases_what_the_kubelet_freed_after_two_rounds_agree(ovs_node: OvsNode):
    node = ovs_node
    ctx = node.agent.cni_service.context
    gone = node.admit("pod-gone")
    prepared_port(node, gone)
    kept = node.admit("pod-kept")
    prepared_port(node, kept)
    node.kubelet.remove_pod("default", "pod-gone")  # deleted before its sandbox came up
    # An allocation younger than the grace stays, whatever the kubelet says.
    assert release_unheld(ctx, min_age=3600, confirmed=True) == []
    # The first round that finds it unheld only notes it; the second releases it.
    assert release_unheld(ctx, min_age=0, confirmed=True) == []
    assert node.port_row(gone) is not None
    assert release_unheld(ctx, min_age=0, confirmed=True) == [gone]
    assert node.port_row(gone) is None and gone not in node.agent.allocator.all()
    assert node.port_row(kept) is not None and kept in node.agent.allocator.all()


def test_the_agent_runs_those_rounds_by_itself(private_ovs: PrivateOvs,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(reconcile, "PERIODIC_MIN_AGE", 0.0)
    with running_node(private_ovs, reconcile_interval=0.2) as node:
        device_id = node.admit("pod-gone")
        prepared_port(node, device_id)
        node.kubelet.remove_pod("default", "pod-gone")
        eventually(lambda: node.port_row(device_id) is None, timeout=10)
        assert device_id not in node.agent.allocator.all()
