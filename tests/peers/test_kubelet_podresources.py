"""numanet's device ownership check against the pod-resources ``List`` answers of a
v1.32 and a v1.35 kubelet (tests/peers/kubelet-v1.32/, tests/peers/kubelet-v1.35/),
served by the pod-resources stand-in as written, with ``Get`` disabled (v1.32: the
KubeletPodResourcesGet gate is alpha and off) or enabled (v1.35: beta and on since 1.34).

Source (written from the code, see each file's ``source``): kubernetes/kubernetes
pkg/kubelet/apis/podresources/server_v1.go (List, Get, getContainerResources),
staging/src/k8s.io/kubelet/pkg/apis/podresources/v1/api.proto, pkg/features/
kube_features.go.

What a real kubelet lists beside the devices: every pod of the node, every container
(with or without devices), ``cpu_ids`` and ``memory`` from the static CPU and memory
managers, and in v1.35 ``dynamic_resources`` and sidecars (restartable init containers)
before the containers. The calls replayed are the recorded Multus v4.3.0 ADD (deviceID
given) and containerd's (no deviceID: numanet asks the kubelet which device is the pod's).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers.cni_shim import assert_cni_error, leases
from helpers.netns import NetNS, netns
from helpers.ovs import private_ovs
from helpers.ovs_node import OvsNode, ok, prepared_port, running_node
from peers.recorded import Recording, document, load, node_paths

from cni import errors
from demo.kubelet_standin.podresources import list_response
from demo.private_ovs import PrivateOvs
from deviceplugin import naming

__all__ = ["private_ovs"]
pytestmark = pytest.mark.ovs

KUBELETS = ("kubelet-v1.32", "kubelet-v1.35")
MULTUS_ADD = load("multus-v4.3.0", "add")
MULTUS_DEL = load("multus-v4.3.0", "del-after-add")
CONTAINERD_ADD = load("containerd-2.1", "add")
CONTAINERD_DEL = load("containerd-2.1", "del")


@pytest.fixture(params=KUBELETS)
def kubelet(request: pytest.FixtureRequest) -> dict[str, Any]:
    return document(request.param, "list")


@pytest.fixture
def node(private_ovs: PrivateOvs, kubelet: dict[str, Any]) -> Iterator[OvsNode]:
    with running_node(private_ovs, bridge=MULTUS_ADD.config["bridge"]) as running:
        # The kubelet stand-in allocates over gRPC as before (the agent's own records);
        # what pod-resources answers is the recorded kubelet's List, as it wrote it.
        for pod in ("pod-a", "pod-b"):
            prepared_port(running, running.admit(pod))
        assert running.pod_resources is not None
        running.pod_resources.set_response(list_response(kubelet["response"]))
        running.pod_resources.get_mode = kubelet["get"]
        yield running


@pytest.fixture
def pod_netns() -> Iterator[NetNS]:
    with netns("nnkp") as ns:
        yield ns


def replay(node: OvsNode, ns: NetNS, call: Recording):
    paths = node_paths(node, {call.env["CNI_NETNS"]: ns.path})
    return call.replay(paths, naming.cni_socket(node.run_dir))


def listed_devices(kubelet: dict[str, Any], pod: str) -> set[str]:
    [entry] = [p for p in kubelet["response"]["pod_resources"] if p["name"] == pod]
    return {d for c in entry["containers"] for dev in c.get("devices", ())
            for d in dev["device_ids"]}


def test_the_recorded_answers_have_the_kubelets_shape(kubelet: dict[str, Any]):
    assert "server_v1.go" in kubelet["source"]
    pods = kubelet["response"]["pod_resources"]
    containers = [c for p in pods for c in p["containers"]]
    assert any(not c.get("devices") for c in containers)  # containers without devices
    assert any(c.get("cpu_ids") for c in containers) and any(c.get("memory") for c in containers)
    has_dra = any(c.get("dynamic_resources") for c in containers)
    assert has_dra == (kubelet["get"] == "enabled")  # both gates went beta together (1.34)
    assert listed_devices(kubelet, "pod-a") == {"vhostuser-ovs-n0-000"}
    assert listed_devices(kubelet, "pod-b") == {"vhostuser-ovs-n0-001"}


def test_the_pods_own_device_passes(node: OvsNode, kubelet: dict[str, Any], pod_netns: NetNS):
    assert node.pods == {"pod-a": "vhostuser-ovs-n0-000", "pod-b": "vhostuser-ovs-n0-001"}
    ok(replay(node, pod_netns, MULTUS_ADD))
    ok(replay(node, pod_netns, MULTUS_DEL))
    # no deviceID: the one device the kubelet lists for pod-a, among its containers
    ok(replay(node, pod_netns, CONTAINERD_ADD))
    assert node.records() == ["vhostuser-ovs-n0-000"]
    ok(replay(node, pod_netns, CONTAINERD_DEL))
    assert node.port_uuids().keys() <= {"vhostuser-ovs-n0-001"} and node.records() == []

    calls = node.pod_resources.calls  # type: ignore[union-attr]
    if kubelet["get"] == "enabled":
        assert calls["Get"] >= 3
    else:  # refused once ("Get method disabled"), List from then on
        assert calls["Get"] == 1 and calls["List"] >= 3


def test_another_pods_device_is_refused(node: OvsNode, kubelet: dict[str, Any],
                                        pod_netns: NetNS):
    theirs = MULTUS_ADD.with_config(deviceID="vhostuser-ovs-n0-001",
                                    pciBusID="vhostuser-ovs-n0-001")
    assert_cni_error(replay(node, pod_netns, theirs), errors.DEVICE_NOT_ALLOCATED,
                     "not allocated", "vhostuser-ovs-n0-000")
    # a pod the kubelet does not list at all
    args = MULTUS_ADD.env["CNI_ARGS"].replace("K8S_POD_NAME=pod-a", "K8S_POD_NAME=pod-z")
    assert_cni_error(replay(node, pod_netns, MULTUS_ADD.with_env(CNI_ARGS=args)),
                     errors.DEVICE_NOT_ALLOCATED, "pod-z")
    assert node.records() == [] and leases(node.ipam_dir, MULTUS_ADD.config["name"]) == []
