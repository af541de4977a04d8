"""The CNI service as the real agent runs it: the kubelet stand-in admits a pod (device
plugin Allocate over gRPC), the pod-resources stand-in reports what it allocated, and
the shim calls the agent's own socket; the port lands on a real OVS-DPDK."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator

import pytest
from helpers.cni_shim import CNI_BIN, CniCall, assert_cni_error, require_host_local, run_shim
from helpers.deviceplugin import AgentHarness, short_dir
from helpers.netns import netns
from helpers.ovs import private_ovs, unique_bridge
from helpers.sysfs import HUGE_2M, NodeSpec, build_sysfs

from cni import errors
from demo.kubelet_standin import ContainerSpec
from demo.kubelet_standin.podresources import PodResourcesStandIn
from demo.private_ovs import PrivateOvs
from deviceplugin import naming
from vswitch.ovs.backend import OvsVSwitch

__all__ = ["private_ovs"]
pytestmark = pytest.mark.ovs

RESOURCE = "numanet.io/vhostuser-ovs"
CONFIG = """\
hugepages: {pageSize: 2Mi, path: @HUGEPAGES@}
pools:
  - {name: vhostuser-ovs, kind: vhost-user, vswitch: ovs, mode: server, slotsPerNode: 4}
"""


@pytest.fixture
def node(private_ovs: PrivateOvs) -> Iterator[tuple[AgentHarness, PodResourcesStandIn]]:  # noqa: F811
    require_host_local()
    root = short_dir("nnag-")
    # One NUMA node with hugepages and the CPUs the private OVS polls on.
    cpus = frozenset(range(max(os.sched_getaffinity(0)) + 1))
    sysfs = build_sysfs(root / "sys", [NodeSpec(id=0, cpus=cpus,
                                                 hugepages={HUGE_2M: (512, 512)})])
    bridge = unique_bridge("a")
    switch = OvsVSwitch(private_ovs.db, bridge, timeout=10.0)
    harness = AgentHarness(root=root, sysfs=sysfs, config_text=CONFIG, vswitches={"ovs": switch})
    pod_resources = None
    try:
        harness.start()
        assert harness.kubelet is not None and harness.agent is not None
        pod_resources = PodResourcesStandIn(harness.agent.options.pod_resources,
                                            harness.kubelet.pod_allocations).start()
        harness.wait_devices(RESOURCE, lambda devices: len(devices) == 4
                             and all(d.healthy for d in devices.values()))
        yield harness, pod_resources
    finally:
        if pod_resources is not None:
            pod_resources.stop()
        harness.cleanup()
        private_ovs.vsctl("--if-exists", "del-br", bridge, wait=False)


def _cni(harness: AgentHarness, command: str, conf: dict, container: str, netns_path: str = "",
         pod: str = "pod-a") -> CniCall:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_IFNAME": "net1",
           "CNI_PATH": CNI_BIN, "NUMANET_CNI_SOCKET": str(naming.cni_socket(harness.run_dir)),
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"}
    if netns_path:
        env["CNI_NETNS"] = netns_path
    return run_shim(env, conf)


def test_pod_admitted_by_the_kubelet_gets_its_slot_plumbed(node, tmp_path):
    harness, _ = node
    assert harness.kubelet is not None and harness.agent is not None
    socket_mode = os.stat(naming.cni_socket(harness.run_dir)).st_mode
    assert stat.S_IMODE(socket_mode) == 0o600
    harness.kubelet.admit_pod("default", "pod-a", [ContainerSpec("app", {RESOURCE: 1})])
    harness.kubelet.admit_pod("default", "pod-b", [ContainerSpec("app", {RESOURCE: 1})])
    [mine] = [a.device_ids[0] for a in harness.kubelet.allocations if a.pod_name == "pod-a"]
    [theirs] = [a.device_ids[0] for a in harness.kubelet.allocations if a.pod_name == "pod-b"]
    conf = {"cniVersion": "1.1.0", "name": "agent-net", "type": "numanet",
            "resourceName": RESOURCE, "deviceID": mine,
            "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                     "ranges": [[{"subnet": "10.88.0.0/24"}]]}}
    with netns("nnag") as ns:
        foreign = _cni(harness, "ADD", {**conf, "deviceID": theirs}, "c1", ns.path)
        assert_cni_error(foreign, errors.DEVICE_NOT_ALLOCATED, theirs, "default/pod-a")
        add = _cni(harness, "ADD", conf, "c1", ns.path)
        assert add.rc == 0, add.stdout
    slot = harness.agent.manager.slot(mine)
    assert slot is not None and slot.host_dir is not None
    assert json.loads((slot.host_dir / "numanet.json").read_text())["deviceID"] == mine
    [port] = [p for p in harness.vswitches["ovs"].ports() if p.device_id == mine]
    assert port.owner.pod_name == "pod-a" and port.owner.container_id == "c1"

    assert _cni(harness, "DEL", conf, "c1").rc == 0
    assert [p for p in harness.vswitches["ovs"].ports() if p.device_id == mine] == []
    assert not (slot.host_dir / "numanet.json").exists()

    # The pod ends; the kubelet never tells the device plugin. GC does: the allocation of
    # pod-a's device goes, pod-b's (still running) stays.
    harness.kubelet.remove_pod("default", "pod-a")
    gc = _cni(harness, "GC", {**conf, "cni.dev/valid-attachments": []}, "")
    assert gc.rc == 0, gc.stdout
    assert set(harness.agent.manager.allocations.all()) == {theirs}


def test_agent_stop_removes_its_cni_socket(node):
    harness, _ = node
    path = naming.cni_socket(harness.run_dir)
    assert path.exists()
    harness.stop()
    assert not path.exists()
