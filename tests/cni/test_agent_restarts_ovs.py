"""Agent and kubelet restarts under running pods, with the real OVS-DPDK.

The real agent runs in this process and builds its OVS backend itself from
``vswitches.ovs`` of its config file (a new backend object per agent start, as a new
process would); the kubelet stand-in registers it, runs ListAndWatch and Allocate; the
pod-resources stand-in reports what the kubelet allocated; the real ``numanet-cni`` shim
calls the agent's socket; IPAM is the real host-local; pods have real network namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.agent_node import AgentNode, RestartableAgentHarness
from helpers.cni_shim import CniCall, require_host_local
from helpers.deviceplugin import short_dir
from helpers.netns import NetNS, netns
from helpers.ovs import eventually, private_ovs, rows, started_private_ovs, unique_bridge
from helpers.sysfs import HUGE_2M, NodeSpec, build_sysfs

from deviceplugin import naming
from vswitch.api import TAG_DEVICE_ID
from vswitch.ovs.private import PrivateOvs

__all__ = ["private_ovs"]
pytestmark = pytest.mark.ovs

POOL = "vhostuser-ovs"
RESOURCE = naming.resource_name(naming.DEFAULT_PREFIX, POOL)
SLOTS = 4
NUMANET = Path(sys.executable).with_name("numanet")
CONFIG = f"""\
hugepages: {{pageSize: 2Mi, path: @HUGEPAGES@}}
vswitches:
  ovs: {{db: "@DB@", bridge: @BRIDGE@}}
pools:
  - {{name: {POOL}, kind: vhost-user, vswitch: ovs, mode: server, slotsPerNode: {SLOTS}}}
"""


@dataclass
class OvsNode(AgentNode):
    ovs: PrivateOvs = field(kw_only=True)
    bridge: str = field(kw_only=True)

    def cni_devinfo_file(self, pod: str) -> Path:
        return self.cni_devinfo_dir / f"{self.network}-{pod}-net1.json"

    def plugin_devinfo_file(self, device_id: str) -> Path:
        return naming.devinfo_path(RESOURCE, device_id, self.harness.devinfo_dir)

    def admit(self, pod: str) -> str:  # type: ignore[override]
        """The kubelet admits a pod asking for one slot (Allocate over gRPC)."""
        return super().admit(pod, RESOURCE)

    def netconf(self, pod: str) -> dict[str, Any]:
        return {"cniVersion": "1.1.0", "name": self.network, "type": "numanet",
                "resourceName": RESOURCE, "deviceID": self.pods[pod],
                "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir),
                         "ranges": [[{"subnet": "10.79.0.0/24"}]]},
                "runtimeConfig": {"CNIDeviceInfoFile": str(self.cni_devinfo_file(pod))}}

    def cni(self, command: str, conf: dict[str, Any], pod: str,  # type: ignore[override]
            netns_path: str = "") -> CniCall:
        return super().cni(command, conf, f"c-{pod}", pod, netns_path)

    def plug_pod(self, pod: str, ns: NetNS) -> tuple[str, dict[str, Any]]:
        """Admit ``pod`` and ADD its network; (device ID, config with prevResult)."""
        device_id = self.admit(pod)
        conf = self.netconf(pod)
        add = ok(self.cni("ADD", conf, pod, ns.path))
        return device_id, {**conf, "prevResult": add.json}

    # -- what is on the node --------------------------------------------------------------

    def port_row(self, device_id: str) -> dict[str, Any] | None:
        found = rows(self.ovs, "Port", f"external_ids:{TAG_DEVICE_ID}={device_id}")
        assert len(found) <= 1, found
        return found[0] if found else None

    def port_uuids(self) -> dict[str, str]:
        """device ID -> Port UUID of every numanet port on this node's bridge."""
        bridge = rows(self.ovs, "Bridge", f"name={self.bridge}")
        if not bridge:
            return {}
        members = bridge[0]["ports"]
        members = set(members if isinstance(members, list) else [members])
        return {p["external_ids"][TAG_DEVICE_ID]: p["_uuid"]
                for p in rows(self.ovs, "Port", "external_ids:numanet-owner=numanet")
                if p["_uuid"] in members}

    def container_config(self, device_id: str) -> Path:
        return naming.slot_dir(self.run_dir, device_id) / naming.CONTAINER_CONFIG_NAME

    def status(self) -> dict[str, Any]:
        """``numanet status --json`` as a user runs it."""
        done = subprocess.run([str(NUMANET), "status", "--json", "--run-dir", str(self.run_dir)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        document: dict[str, Any] = json.loads(done.stdout)
        return document


def ok(call: CniCall) -> CniCall:
    assert call.rc == 0, call.stdout + call.stderr
    return call


def all_healthy(devices: dict[str, Any]) -> bool:
    return len(devices) == SLOTS and all(d.healthy for d in devices.values())


def _make_node(ovs: PrivateOvs) -> OvsNode:
    root = short_dir("nnro-")
    # One NUMA node with hugepages and the CPUs the private OVS polls on.
    cpus = frozenset(range(max(os.sched_getaffinity(0)) + 1))
    sysfs = build_sysfs(root / "sys", [NodeSpec(id=0, cpus=cpus,
                                                 hugepages={HUGE_2M: (512, 512)})])
    bridge = unique_bridge("r")
    config = CONFIG.replace("@DB@", ovs.db).replace("@BRIDGE@", bridge)
    harness = RestartableAgentHarness(root=root, sysfs=sysfs, config_text=config)
    return OvsNode(root=root, harness=harness, network="ovs-restart-net", ovs=ovs,
                   bridge=bridge)


@contextmanager
def running_node(ovs: PrivateOvs) -> Iterator[OvsNode]:
    """The node running: agent registered, every slot Healthy, pod-resources serving."""
    require_host_local()
    node = _make_node(ovs)
    try:
        node.harness.start()
        node.start_pod_resources()
        node.harness.wait_devices(RESOURCE, all_healthy, timeout=10)
        yield node
    finally:
        if node.pod_resources is not None:
            node.pod_resources.stop()
        node.harness.cleanup()
        ovs.vsctl("--if-exists", "del-br", node.bridge, wait=False)


@pytest.fixture
def ovs_node(private_ovs: PrivateOvs) -> Iterator[OvsNode]:  # noqa: F811
    with running_node(private_ovs) as node:
        yield node


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
        assert node.admit("pod-new") != live_id
        ok(node.cni("DEL", live_conf, "pod-live"))
    assert node.port_uuids() == {}
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
    assert node.port_uuids() == {} and node.records() == []
