"""Agent and kubelet restarts under running pods, with the real OVS-DPDK.

The real agent runs in this process and builds its OVS backend itself from
``vswitches.ovs`` of its config file (a new backend object per agent start, as a new
process would); the kubelet stand-in registers it, runs ListAndWatch and Allocate; the
pod-resources stand-in reports what the kubelet allocated; the real ``numanet-cni`` shim
calls the agent's socket; IPAM is the real host-local; pods have real network namespaces.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers.netns import netns
from helpers.ovs import eventually, private_ovs, started_private_ovs
from helpers.ovs_node import (
    POOL,
    RESOURCE,
    SLOTS,
    OvsNode,
    all_healthy,
    ok,
    ovs_node,
    running_node,
)

from deviceplugin import naming

__all__ = ["ovs_node", "private_ovs"]
pytestmark = pytest.mark.ovs

@pytest.fixture
def own_ovs_node() -> Iterator[OvsNode]:
    """A node with an OVS of its own: the test stops its vswitchd."""
    with started_private_ovs() as ovs, running_node(ovs) as node:
        yield node


# -- 1. the agent restarts; OVS keeps running ---------------------------------------------


def test_agent_restart_adopts_live_pods_ports_and_collects_the_dead_pods(ovs_node: OvsNode):
    node = ovs_node
    with netns("nnro") as ns_live:
        live_id, live_conf = node.plug_pod("pod-live", ns_live)
        with netns("nnro") as ns_dead:
            dead_id, _ = node.plug_pod("pod-dead", ns_dead)
            before = node.port_uuids()
            assert set(before) == {live_id, dead_id}
            live_config = node.container_config(live_id).read_bytes()
            dead_devinfo = node.plugin_devinfo_file(dead_id)
            assert dead_devinfo.exists() and node.cni_devinfo_file("pod-dead").exists()
            assert len(node.leases()) == 2

            node.harness.stop_agent()
            # OVS keeps both ports over the agent's restart, the disk keeps the records.
            assert node.port_uuids() == before
            assert node.records() == sorted([live_id, dead_id])
        # pod-dead ended: its network namespace went (above) and the kubelet forgot it.
        node.kubelet.remove_pod("default", "pod-dead")

        node.harness.start_agent()
        node.harness.wait_devices(RESOURCE, all_healthy, timeout=10)
        # A new backend object, built by the new agent from its config.
        assert len(node.harness.created) == 2
        assert node.agent.vswitches["ovs"] is node.harness.created[1]

        # pod-live's port was adopted, not re-created: same Port row.
        after = eventually(lambda: node.port_uuids() if dead_id not in node.port_uuids()
                           else None, timeout=10)
        assert after == {live_id: before[live_id]}
        assert node.container_config(live_id).read_bytes() == live_config
        ok(node.cni("CHECK", live_conf, "pod-live", ns_live.path))

        # pod-dead's attachment is gone everywhere: port, container config, record, IPAM
        # lease, device-info files, and the device plugin's allocation.
        assert node.port_row(dead_id) is None
        assert not node.container_config(dead_id).exists()
        assert node.records() == [live_id]
        assert len(node.leases()) == 1
        assert not dead_devinfo.exists()
        assert not node.cni_devinfo_file("pod-dead").exists()
        assert set(node.agent.allocator.all()) == {live_id}
        assert node.plugin_devinfo_file(live_id).exists()  # restored for the live pod

        # The freed slot is the kubelet's to give again; the live pod still works to the end.
        new_id = node.admit("pod-new")
        assert new_id != live_id
        ok(node.cni("DEL", live_conf, "pod-live"))
    # What stays is pod-new's port, prepared at its Allocate and waiting for its ADD.
    assert set(eventually(node.port_uuids, timeout=10)) == {new_id}
    assert node.port_row(new_id)["external_ids"]["numanet-prepared"] == "true"
    assert node.records() == [] and node.leases() == []
    assert not node.container_config(live_id).exists()


# -- 2. the kubelet restarts under attached pods --------------------------------------------


def test_kubelet_restart_re_registers_the_same_devices_and_leaves_ports_alone(
        ovs_node: OvsNode):
    node = ovs_node
    kubelet = node.kubelet
    with netns("nnro") as ns_a, netns("nnro") as ns_b, netns("nnro") as ns_c:
        dev_a, conf_a = node.plug_pod("pod-a", ns_a)
        dev_b, conf_b = node.plug_pod("pod-b", ns_b)
        ports = node.port_uuids()
        ids = sorted(kubelet.devices(RESOURCE))
        plugin_socket = node.harness.plugin_dir / naming.plugin_socket_name(POOL)
        registrations = len(kubelet.accepted_registrations(RESOURCE))

        kubelet.restart()  # every socket in device-plugins/ goes, a new kubelet.sock comes
        # How fast (the 1 s target) is bench/bench_deviceplugin.py's job; here: that it does.
        assert kubelet.wait_for(
            lambda: len(kubelet.accepted_registrations(RESOURCE)) > registrations,
            timeout=10.0), "the agent did not register again after the kubelet restart"
        assert plugin_socket.exists()  # the kubelet deleted it; the agent serves it again
        # ListAndWatch on the new connection: the same device IDs, all Healthy.
        devices = node.harness.wait_devices(RESOURCE, all_healthy)
        assert sorted(devices) == ids
        # The allocations are still the agent's (and the kubelet's: it checkpoints them).
        assert set(node.agent.allocator.all()) == {dev_a, dev_b}
        assert node.plugin_devinfo_file(dev_a).exists()
        assert node.port_uuids() == ports

        # DEL and a new pod's Allocate + ADD work through the new registration.
        ok(node.cni("DEL", conf_a, "pod-a"))
        assert node.port_row(dev_a) is None
        kubelet.remove_pod("default", "pod-a")
        dev_c, conf_c = node.plug_pod("pod-c", ns_c)
        assert dev_c != dev_b
        assert node.port_uuids() == {dev_b: ports[dev_b], dev_c: node.port_uuids()[dev_c]}
        ok(node.cni("CHECK", conf_b, "pod-b", ns_b.path))
        ok(node.cni("CHECK", conf_c, "pod-c", ns_c.path))

        for pod, conf in (("pod-b", conf_b), ("pod-c", conf_c)):
            ok(node.cni("DEL", conf, pod))
    assert node.port_uuids() == {}
    assert node.records() == [] and node.leases() == []


# -- 3. numanet status against the running agent ---------------------------------------------


def _usage(document: dict[str, Any]) -> list[dict[str, Any]]:
    [pool] = [p for p in document["pools"] if p["name"] == POOL]
    nodes: list[dict[str, Any]] = pool["nodes"]
    return nodes


def _ovs(document: dict[str, Any]) -> dict[str, Any]:
    [ovs] = [v for v in document["vswitches"] if v["name"] == "ovs"]
    return ovs


def _status_until(node: OvsNode, predicate: Callable[[dict[str, Any]], bool],
                  timeout: float) -> dict[str, Any]:
    """Run ``numanet status --json`` until its document satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while True:
        document = node.status()
        if predicate(document):
            return document
        if time.monotonic() > deadline:
            pytest.fail(f"numanet status did not get there within {timeout} s: {document}")
        time.sleep(0.1)


def test_status_reports_slots_per_numa_node_and_ovs_health(own_ovs_node: OvsNode):
    node = own_ovs_node
    with netns("nnro") as ns_a:
        dev_a, conf_a = node.plug_pod("pod-a", ns_a)
        dev_b = node.admit("pod-b")  # allocated, no network yet: still a used slot
        assert set(node.agent.allocator.all()) == {dev_a, dev_b}

        document = _status_until(node, lambda d: _usage(d)[0]["used"] == 2, timeout=5)
        assert document["agentRunning"] is True
        [pool] = [p for p in document["pools"] if p["name"] == POOL]
        assert pool["resource"] == RESOURCE and pool["registered"] is True
        assert pool["vswitch"] == "ovs" and pool["kind"] == "vhost-user"
        assert _usage(document) == [{"numa": 0, "total": SLOTS, "healthy": SLOTS, "used": 2,
                                     "free": SLOTS - 2}]
        assert pool["unhealthy"] == {}
        ovs = _ovs(document)
        assert ovs["healthy"] is True and ovs["pollNodes"] == [0]

        node.ovs.stop_vswitchd()
        down = _status_until(node, lambda d: not _ovs(d)["healthy"], timeout=10)
        assert "ovs-vswitchd" in _ovs(down)["reason"]
        assert down["agentRunning"] is True
        # Its slots are Unhealthy now; the allocations still count as used.
        _status_until(node, lambda d: _usage(d) == [
            {"numa": 0, "total": SLOTS, "healthy": 0, "used": 2, "free": 0}], timeout=5)

        node.ovs.start_vswitchd()
        back = _status_until(node, lambda d: _ovs(d)["healthy"], timeout=15)
        assert _ovs(back)["pollNodes"] == [0]
        node.harness.wait_devices(RESOURCE, all_healthy, timeout=10)
        ok(node.cni("CHECK", conf_a, "pod-a", ns_a.path))
        ok(node.cni("DEL", conf_a, "pod-a"))
    # pod-b never got its network: only its port prepared at Allocate is left, unowned.
    assert set(node.port_uuids()) == {dev_b} and node.records() == []
    assert node.port_row(dev_b)["external_ids"]["numanet-prepared"] == "true"


def test_restarted_agent_removes_ports_no_record_or_pod_explains(ovs_node: OvsNode):
    node = ovs_node
    with netns("nnro") as ns_gone, netns("nnro") as ns_held:
        gone_id, _ = node.plug_pod("pod-gone", ns_gone)
        held_id, held_conf = node.plug_pod("pod-held", ns_held)
        before = node.port_uuids()
        node.harness.stop_agent()
        # The records are lost (a wiped run directory); pod-gone ended meanwhile.
        for device_id in (gone_id, held_id):
            (node.run_dir / "cni" / f"{device_id}.json").unlink()
        node.kubelet.remove_pod("default", "pod-gone")
        node.harness.start_agent()
        node.harness.wait_devices(RESOURCE, all_healthy, timeout=10)
        # pod-gone's port goes; pod-held's stays (the kubelet still gives it the device).
        eventually(lambda: gone_id not in node.port_uuids(), timeout=10)
        assert node.port_uuids() == {held_id: before[held_id]}
        assert not node.container_config(gone_id).exists()
        assert node.container_config(held_id).exists()
        # pod-held's DEL still finds its port by its owner tags.
        ok(node.cni("DEL", held_conf, "pod-held"))
        assert node.port_uuids() == {}
