"""The whole DRA path on a two-NUMA-node machine, with the real agent: the agent publishes
its DRA pools as ResourceSlices (API server stand-in over HTTP), slots on node 1 carry
numaNode 1; a claim the "scheduler" allocates on such a slot (as matchAttribute on
resource.kubernetes.io/numaNode with a node-1 CPU would) is prepared by the kubelet DRA
stand-in over gRPC; the agent prepares the slot's port; the pod-resources stand-in lists
the claim in ``dynamic_resources``; the real ``numanet-cni`` shim's ADD passes the
ownership check and claims the prepared port. The vSwitch is a double: the OVS path is
covered by the OVS end-to-end tests."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from helpers.cni_shim import CNI_BIN, CniCall, assert_cni_error, run_shim
from helpers.deviceplugin import AgentHarness, InMemoryVSwitchDouble, short_dir
from helpers.dra import allocated_claim
from helpers.netns import netns
from helpers.sysfs import two_nodes

from agent.agent import AgentOptions
from cni import errors
from demo.apiserver_standin import ApiServerStandin
from demo.kubelet_standin.dra import DraKubeletStandin
from demo.kubelet_standin.podresources import PodResourcesStandIn
from deviceplugin import naming
from vswitch.api import TAG_PREPARED, Owner, PluggedPort, PortSpec

NODE = "worker-1"
DRIVER = "numanet.io"
RESOURCE = "numanet.io/vhostuser-ovs"
CONFIG = """\
resourcePrefix: numanet.io
hugepages: {pageSize: 2Mi, path: @HUGEPAGES@}
pools:
  - {name: vhostuser-ovs, kind: vhost-user, vswitch: ovs, mode: server, slotsPerNode: 2,
     frontend: dra}
  - {name: memif-ovs, kind: memif, vswitch: ovs, slotsPerNode: 2}
"""


class PreparingDouble(InMemoryVSwitchDouble):
    """TEST DOUBLE: the in-memory vSwitch with ports prepared ahead and claimed by a plug,
    as the OVS backend does (tag ``numanet-prepared``, owner set on the claim)."""

    def __init__(self) -> None:
        super().__init__("ovs", poll_nodes=frozenset({0, 1}))
        self.claimed: list[str] = []
        self.prepared_event = threading.Event()

    def prepare(self, spec: PortSpec) -> PluggedPort | None:
        port = PluggedPort(spec.device_id, f"nn-{spec.device_id}", spec.kind,
                           spec.socket_path, spec.network, Owner(), tags={TAG_PREPARED: "true"})
        with self._lock:
            port = self._ports.setdefault(spec.device_id, port)
        self.prepared_event.set()
        return port

    def plug(self, spec: PortSpec) -> PluggedPort:
        with self._lock:
            old = self._ports.get(spec.device_id)
            if old is not None and old.prepared:
                self.claimed.append(spec.device_id)
                port = replace(old, owner=spec.owner, tags={})
                self._ports[spec.device_id] = port
                return port
        return super().plug(spec)


@dataclass
class DraAgentHarness(AgentHarness):
    apiserver: ApiServerStandin | None = None

    def options(self) -> AgentOptions:
        assert self.apiserver is not None
        return replace(super().options(), node_name=NODE,
                       kubeconfig=self.apiserver.kubeconfig(self.root / "kubeconfig"),
                       dra_cdi_dir=self.root / "cdi-dra")


@dataclass
class Bed:
    harness: DraAgentHarness
    apiserver: ApiServerStandin
    kubelet: DraKubeletStandin
    pod_resources: PodResourcesStandIn
    switch: PreparingDouble
    pods: dict[str, tuple[str, str, str]]  # pod UID -> (namespace, name, container)

    def cni(self, command: str, conf: dict, container: str, pod: str,
            netns_path: str = "") -> CniCall:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
               "CNI_CONTAINERID": container, "CNI_IFNAME": "net1", "CNI_PATH": CNI_BIN,
               "NUMANET_CNI_SOCKET": str(naming.cni_socket(self.harness.run_dir)),
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"}
        if netns_path:
            env["CNI_NETNS"] = netns_path
        return run_shim(env, conf)


@pytest.fixture
def bed(apiserver: ApiServerStandin) -> Iterator[Bed]:
    root = short_dir("ndra-")
    switch = PreparingDouble()
    harness = DraAgentHarness(root=root, sysfs=two_nodes(root / "sys"), config_text=CONFIG,
                              vswitches={"ovs": switch}, apiserver=apiserver)
    kubelet = pod_resources = None
    try:
        harness.start()
        assert harness.agent is not None
        kubelet = DraKubeletStandin(harness.kubelet_dir,
                                    lambda ns, name: apiserver.claims.get((ns, name))).start()
        pods: dict[str, tuple[str, str, str]] = {}
        pod_resources = PodResourcesStandIn(harness.agent.options.pod_resources,
                                            harness.kubelet.pod_allocations
                                            if harness.kubelet else ())
        pod_resources.set_dynamic(lambda: kubelet.pod_dynamic_resources(pods))
        pod_resources.start()
        yield Bed(harness, apiserver, kubelet, pod_resources, switch, pods)
    finally:
        if pod_resources is not None:
            pod_resources.stop()
        if kubelet is not None:
            kubelet.stop()
        harness.cleanup()


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_a_node_1_slot_is_published_prepared_and_claimed_by_the_cni(bed: Bed):
    # 1. ResourceSlices: the DRA pool only (memif-ovs stays a device plugin pool).
    assert _wait(lambda: len(bed.apiserver.devices(NODE, DRIVER)) == 4)
    devices = bed.apiserver.devices(NODE, DRIVER)
    assert {pool for pool, _ in devices} == {f"{NODE}/vhostuser-ovs"}
    assert not bed.apiserver.refused
    numa = {name: d["attributes"]["resource.kubernetes.io/numaNode"]["int"]
            for (_, name), d in devices.items()}
    assert numa == {"vhostuser-ovs-n0-000": 0, "vhostuser-ovs-n0-001": 0,
                    "vhostuser-ovs-n1-000": 1, "vhostuser-ovs-n1-001": 1}
    assert bed.harness.kubelet is not None
    assert "numanet.io/vhostuser-ovs" not in bed.harness.kubelet.registrations
    # 2. The scheduler aligns the slot with CPUs of node 1: it picks a numaNode-1 device.
    [(pool, device)] = [k for k, d in sorted(devices.items())
                        if d["attributes"]["resource.kubernetes.io/numaNode"]["int"] == 1][:1]
    slot_id = devices[(pool, device)]["attributes"]["k8s.cni.cncf.io/deviceID"]["string"]
    claim = bed.apiserver.add_claim(allocated_claim("net", "pod-a", "uid-a",
                                                    [("net", pool, device)]))
    # 3. The kubelet prepares it through the agent's DRA plugin.
    bed.kubelet.wait_registered(DRIVER)
    cdi = bed.kubelet.prepare_pod("default", "pod-a", "uid-a", ["net"])
    assert cdi == {"net": [f"numanet.io/claim={claim['metadata']['uid']}-{device}"]}
    spec = json.loads((bed.harness.root / "cdi-dra" /
                       f"numanet.io-claim-{claim['metadata']['uid']}.json").read_text())
    assert "NUMANET_VHOSTUSER_OVS_NUMA=1" in spec["devices"][0]["containerEdits"]["env"]
    agent = bed.harness.agent
    assert agent is not None
    record = agent.manager.allocations.get(slot_id)
    assert record is not None and record.numa_node == 1
    # ... and the agent prepares its port, unowned, while the runtime makes the sandbox.
    assert bed.switch.prepared_event.wait(10)
    port = bed.switch.port(slot_id)
    assert port is not None and port.prepared
    # 4. Multus calls the CNI with the deviceID the slice carries; the kubelet's
    #    pod-resources lists the claim's device for pod-a, not for pod-b.
    bed.pods["uid-a"] = ("default", "pod-a", "app")
    conf = {"cniVersion": "1.1.0", "name": "dra-net", "type": "numanet",
            "resourceName": RESOURCE, "deviceID": slot_id}
    with netns("nndra") as ns:
        foreign = bed.cni("ADD", conf, "c2", "pod-b", ns.path)
        assert_cni_error(foreign, errors.DEVICE_NOT_ALLOCATED, slot_id)
        add = bed.cni("ADD", conf, "c1", "pod-a", ns.path)
        assert add.rc == 0, add.stdout + add.stderr
    assert bed.switch.claimed == [slot_id]
    port = bed.switch.port(slot_id)
    assert port is not None and not port.prepared and port.owner.pod_name == "pod-a"
    assert bed.cni("DEL", conf, "c1", "pod-a").rc == 0
    # 5. The pod ends: the kubelet unprepares the claim, the allocation goes.
    bed.pods.clear()
    bed.kubelet.unprepare_pod("default", "uid-a")
    assert agent.manager.allocations.get(slot_id) is None
    assert agent.status()["dra"]["preparedClaims"] == 0


def test_a_port_prepared_for_a_claim_no_pod_used_goes_at_unprepare(bed: Bed):
    assert _wait(lambda: len(bed.apiserver.devices(NODE, DRIVER)) == 4)
    bed.apiserver.add_claim(allocated_claim("net", "pod-a", "uid-a",
                                            [("net", f"{NODE}/vhostuser-ovs",
                                              "vhostuser-ovs-n0-001")]))
    bed.kubelet.wait_registered(DRIVER)
    bed.kubelet.prepare_pod("default", "pod-a", "uid-a", ["net"])
    assert bed.switch.prepared_event.wait(10)
    assert bed.switch.port("vhostuser-ovs-n0-001") is not None
    bed.kubelet.unprepare_pod("default", "uid-a")  # the pod never started
    assert _wait(lambda: bed.switch.port("vhostuser-ovs-n0-001") is None)


def test_vswitch_down_empties_the_slice_and_the_agent_stop_deletes_it(bed: Bed):
    assert _wait(lambda: len(bed.apiserver.devices(NODE, DRIVER)) == 4)
    bed.switch.set_health(False, "down for the test")
    assert _wait(lambda: len(bed.apiserver.devices(NODE, DRIVER)) == 0)
    (vhost,) = bed.apiserver.node_slices(NODE, DRIVER)
    assert vhost["spec"]["pool"]["generation"] >= 2
    bed.switch.set_health(True)
    assert _wait(lambda: len(bed.apiserver.devices(NODE, DRIVER)) == 4)
    bed.kubelet.wait_registered(DRIVER)
    bed.harness.stop()
    assert bed.apiserver.node_slices(NODE, DRIVER) == []
    assert not (bed.harness.kubelet_dir / "plugins_registry" / f"{DRIVER}-reg.sock").exists()
    assert _wait(lambda: DRIVER not in bed.kubelet.registrations)


def test_ready_only_once_the_kubelet_registered_the_dra_plugin(bed: Bed):
    agent = bed.harness.agent
    assert agent is not None
    bed.kubelet.wait_registered(DRIVER)
    assert _wait(lambda: agent._ready()[0]), agent._ready()
