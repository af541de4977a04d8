"""CRI-O 1.33 (through ocicni and libcni) calling numanet as its default network
(tests/peers/cri-o-1.33/), replayed unchanged through the installed ``numanet-cni``
against the real agent, a private real OVS-DPDK and real host-local IPAM.

Source (written from the code, see each file's ``source``): cri-o/cri-o
server/sandbox_network.go (newPodNetwork, networkGC); cri-o/ocicni pkg/ocicni/ocicni.go
(buildCNIRuntimeConf, StatusWithContext, GC); libcni 1.2.

What CRI-O gives a plugin: CNI_ARGS in ocicni's fixed order with the pod UID; the cgroup
parent and the pod's annotations in ``runtimeConfig``; ``eth0``; CNI_PATH from CRI-O's
default ``plugin_dirs`` with its trailing slash; GC at start-up with the sandboxes it
still has, STATUS for the runtime's status; no deviceID (numanet asks the kubelet).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.cni_shim import leases
from helpers.netns import NetNS, netns
from helpers.ovs import private_ovs
from helpers.ovs_node import OvsNode, ok, prepared_port, running_node
from peers.recorded import Recording, cni_args, load, mapped, node_paths

from demo.private_ovs import PrivateOvs
from deviceplugin import naming
from vswitch.api import TAG_POD_NAME

__all__ = ["private_ovs"]
pytestmark = pytest.mark.ovs

PEER = "cri-o-1.33"
ADD = {pod: load(PEER, f"add-{pod}") for pod in ("pod-a", "pod-b")}
DEL = load(PEER, "del-pod-a")
GC = load(PEER, "gc")
STATUS = load(PEER, "status")
NETWORK = ADD["pod-a"].config["name"]


@pytest.fixture
def node(private_ovs: PrivateOvs) -> Iterator[OvsNode]:
    with running_node(private_ovs) as running:
        yield running


@pytest.fixture
def namespaces() -> Iterator[dict[str, NetNS]]:
    with netns("nnca") as a, netns("nncb") as b:
        yield {"pod-a": a, "pod-b": b}


def paths(node: OvsNode, namespaces: dict[str, NetNS]) -> dict[str, str]:
    return node_paths(node, {ADD[pod].env["CNI_NETNS"]: ns.path
                             for pod, ns in namespaces.items()})


def replay(node: OvsNode, namespaces: dict[str, NetNS], call: Recording):
    return call.replay(paths(node, namespaces), naming.cni_socket(node.run_dir))


def test_the_cri_o_calls_carry_what_ocicni_builds():
    assert "cri-o/ocicni" in DEL.origin and "sandbox_network.go" in DEL.origin
    for pod, call in ADD.items():
        assert [k for k, _ in cni_args(call)] == [
            "IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME",
            "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"]
        assert dict(cni_args(call))["K8S_POD_NAME"] == pod
        assert call.env["CNI_IFNAME"] == "eth0" and call.env["CNI_PATH"] == "/opt/cni/bin/"
        assert set(call.config["runtimeConfig"]) == {"cgroupPath",
                                                     "io.kubernetes.cri.pod-annotations"}
    assert GC.config["cni.dev/valid-attachments"] == [
        {"containerID": ADD["pod-a"].env["CNI_CONTAINERID"], "ifname": "eth0"}]


def test_cri_o_add_gc_status_del(node: OvsNode, namespaces: dict[str, NetNS]):
    results = {}
    for pod in ("pod-a", "pod-b"):
        prepared_port(node, node.admit(pod))
        results[pod] = result = ok(replay(node, namespaces, ADD[pod])).json
        assert result["interfaces"][0]["name"] == "eth0"
        assert node.port_row(node.pods[pod])["external_ids"][TAG_POD_NAME] == pod
    kept, stale = node.pods["pod-a"], node.pods["pod-b"]
    assert node.records() == sorted([kept, stale])
    assert leases(node.ipam_dir, NETWORK) == ["10.56.7.2", "10.56.7.3"]

    assert ok(replay(node, namespaces, STATUS)).stdout.strip() == ""

    # GC at CRI-O's start: pod-b's sandbox is gone, numanet removes its attachment
    ok(replay(node, namespaces, GC))
    assert set(node.port_uuids()) == {kept} and node.records() == [kept]
    assert leases(node.ipam_dir, NETWORK) == ["10.56.7.2"]

    # the DEL's prevResult is libcni's cache of pod-a's ADD
    assert mapped(DEL.config["prevResult"], paths(node, namespaces)) == results["pod-a"]
    ok(replay(node, namespaces, DEL))
    assert node.port_uuids() == {} and node.records() == []
    assert leases(node.ipam_dir, NETWORK) == []
