"""containerd 2.1's CRI plugin (through go-cni and libcni) calling numanet as its second
network (tests/peers/containerd-2.1/), replayed unchanged through the installed
``numanet-cni`` against the real agent, a private real OVS-DPDK and real host-local IPAM.

Source (written from the code, see each file's ``source``): containerd/containerd
internal/cri/server/sandbox_run.go (cniNamespaceOpts, toCNILabels), sandbox_stop.go;
containerd/go-cni namespace.go, namespace_opts.go, opts.go, types.go; libcni 1.2.

What containerd gives a plugin: CNI_ARGS from a Go map, so the five keys come in any
order; ``runtimeConfig`` with pod annotations, port mappings, DNS and the cgroup path
(those the plugin declares); the interface ``eth1`` of a second network; and no
deviceID, which containerd does not have. numanet then takes the pod's one device of the
network's pool from the kubelet, which it once refused to do.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from helpers.cni_shim import assert_cni_error, leases
from helpers.netns import NetNS, netns
from helpers.ovs import private_ovs
from helpers.ovs_node import OvsNode, ok, prepared_port, running_node
from peers.recorded import Recording, cni_args, load, mapped, node_paths

from cni import errors
from demo.private_ovs import PrivateOvs
from deviceplugin import naming
from vswitch.api import TAG_CONTAINER_ID, TAG_POD_NAME, TAG_PREPARED

__all__ = ["private_ovs"]
pytestmark = pytest.mark.ovs

PEER = "containerd-2.1"
ADD = load(PEER, "add")
DEL = load(PEER, "del")
NETWORK = ADD.config["name"]


@pytest.fixture
def node(private_ovs: PrivateOvs) -> Iterator[OvsNode]:
    with running_node(private_ovs) as running:
        yield running


@pytest.fixture
def pod_netns() -> Iterator[NetNS]:
    with netns("nncd") as ns:
        yield ns


def paths(node: OvsNode, ns: NetNS) -> dict[str, str]:
    return node_paths(node, {ADD.env["CNI_NETNS"]: ns.path})


def replay(node: OvsNode, ns: NetNS, call: Recording):
    return call.replay(paths(node, ns), naming.cni_socket(node.run_dir))


def test_the_containerd_calls_carry_what_go_cni_builds():
    assert "containerd/go-cni" in ADD.origin and "sandbox_run.go" in ADD.origin
    for call in (ADD, DEL):
        args = dict(cni_args(call))
        assert set(args) == {"IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME",
                             "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"}
        assert cni_args(call)[0][0] != "IgnoreUnknown"  # a map's order, not Multus'
        assert args["K8S_POD_INFRA_CONTAINER_ID"] == call.env["CNI_CONTAINERID"]
        assert call.env["CNI_IFNAME"] == "eth1"
        conf = call.config
        assert "deviceID" not in conf and "deviceID" not in conf["runtimeConfig"]
        assert set(conf["runtimeConfig"]) == {"cgroupPath", "dns", "portMappings",
                                              "io.kubernetes.cri.pod-annotations"}


def test_containerd_add_then_del(node: OvsNode, pod_netns: NetNS):
    device_id = node.admit("pod-a")
    prepared = prepared_port(node, device_id)

    result = ok(replay(node, pod_netns, ADD)).json
    [iface] = result["interfaces"]
    assert iface["name"] == "eth1" and iface["sandbox"] == pod_netns.path
    assert leases(node.ipam_dir, NETWORK) == ["10.56.6.2"]
    # the device the kubelet gave the pod, though the call named none
    claimed = node.port_row(device_id)
    assert claimed is not None and claimed["_uuid"] == prepared["_uuid"]
    assert TAG_PREPARED not in claimed["external_ids"]
    assert claimed["external_ids"][TAG_POD_NAME] == "pod-a"
    assert claimed["external_ids"][TAG_CONTAINER_ID] == ADD.env["CNI_CONTAINERID"]
    assert node.records() == [device_id]

    assert mapped(DEL.config["prevResult"], paths(node, pod_netns)) == result
    ok(replay(node, pod_netns, DEL))
    assert node.port_uuids() == {} and node.records() == []
    assert leases(node.ipam_dir, NETWORK) == []
    ok(replay(node, pod_netns, DEL))


@pytest.mark.parametrize("shift", [1, 3])
def test_containerd_args_in_another_map_order(node: OvsNode, pod_netns: NetNS, shift: int):
    """Go map iteration order changes from call to call; any order is the same call."""
    pairs = cni_args(ADD)
    reordered = ";".join("=".join(p) for p in itertools.islice(
        itertools.cycle(pairs), shift, shift + len(pairs)))
    prepared_port(node, node.admit("pod-a"))
    ok(replay(node, pod_netns, ADD.with_env(CNI_ARGS=reordered)))
    ok(replay(node, pod_netns, DEL.with_env(CNI_ARGS=reordered)))
    assert node.port_uuids() == {} and node.records() == []


def test_containerd_add_for_a_pod_without_the_device_is_refused(node: OvsNode,
                                                               pod_netns: NetNS):
    """Taking the device from the kubelet gives a pod nothing that is not its own."""
    node.admit("pod-b")  # holds a device; pod-a (the recorded pod) holds none
    call = replay(node, pod_netns, ADD)
    assert_cni_error(call, errors.DEVICE_NOT_ALLOCATED, "pod-a", "no free device")
    assert node.records() == [] and leases(node.ipam_dir, NETWORK) == []
