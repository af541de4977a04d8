"""A node for end-to-end tests with the real OVS-DPDK: the real agent in this process
(building its OVS backend from ``vswitches.ovs`` of its config file), the kubelet and
pod-resources stand-ins, the real ``numanet-cni`` shim, host-local IPAM; pods have real
network namespaces. Ports are read back with ovs-vsctl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from demo.private_ovs import PrivateOvs
from deviceplugin import naming
from helpers.agent_node import AgentNode, RestartableAgentHarness
from helpers.cni_shim import CniCall, require_host_local
from helpers.deviceplugin import short_dir
from helpers.netns import NetNS
from helpers.ovs import eventually, interface, rows, unique_bridge
from helpers.sysfs import HUGE_2M, NodeSpec, build_sysfs
from vswitch.api import TAG_DEVICE_ID, TAG_PREPARED
from vswitch.ovs.ports import port_name

POOL = "vhostuser-ovs"
RESOURCE = naming.resource_name(naming.DEFAULT_PREFIX, POOL)
SLOTS = 4
NUMANET = Path(sys.executable).with_name("numanet")
CONFIG = f"""\
hugepages: {{pageSize: 2Mi, path: @HUGEPAGES@}}
vswitches:
  ovs: {{db: "@DB@", bridge: @BRIDGE@, prepareAtAllocate: @PREPARE@}}
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


def prepared_port(node: OvsNode, device_id: str) -> dict[str, Any]:
    """The device's Port once the agent has prepared it and ovs-vswitchd has set it up."""
    def ready() -> dict[str, Any] | None:
        port = node.port_row(device_id)
        iface = interface(node.ovs, port_name(device_id))
        if port is None or iface is None or not iface["ofport"] or iface["ofport"] <= 0:
            return None
        return port
    port = eventually(ready, timeout=10)
    assert port["external_ids"].get(TAG_PREPARED) == "true"
    return port


def ok(call: CniCall) -> CniCall:
    assert call.rc == 0, call.stdout + call.stderr
    return call


def all_healthy(devices: dict[str, Any]) -> bool:
    return len(devices) == SLOTS and all(d.healthy for d in devices.values())


def _make_node(ovs: PrivateOvs, prepare: bool, bridge: str | None = None,
               **options: Any) -> OvsNode:
    root = short_dir("nnro-")
    # One NUMA node with hugepages and the CPUs the private OVS polls on.
    cpus = frozenset(range(max(os.sched_getaffinity(0)) + 1))
    sysfs = build_sysfs(root / "sys", [NodeSpec(id=0, cpus=cpus,
                                                 hugepages={HUGE_2M: (512, 512)})])
    bridge = bridge or unique_bridge("r")
    config = CONFIG.replace("@DB@", ovs.db).replace("@BRIDGE@", bridge).replace(
        "@PREPARE@", "true" if prepare else "false")
    harness = RestartableAgentHarness(root=root, sysfs=sysfs, config_text=config, **options)
    return OvsNode(root=root, harness=harness, network="ovs-restart-net", ovs=ovs,
                   bridge=bridge)


@contextmanager
def running_node(ovs: PrivateOvs, prepare: bool = True, bridge: str | None = None,
                 **options: Any) -> Iterator[OvsNode]:
    """The node running: agent registered, every slot Healthy, pod-resources serving.
    ``prepare``: the config's vswitches.ovs.prepareAtAllocate; ``bridge``: the pool's
    bridge (a unique one when None); ``options``: of the agent harness
    (``reconcile_interval``...)."""
    require_host_local()
    node = _make_node(ovs, prepare, bridge, **options)
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
def ovs_node(private_ovs: PrivateOvs) -> Iterator[OvsNode]:
    """A running node on the session's private OVS (the test module imports ``private_ovs``
    from helpers.ovs too, so pytest finds it)."""
    with running_node(private_ovs) as node:
        yield node
