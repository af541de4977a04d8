"""The real Multus v4.3.0 thin plugin's calls (tests/peers/multus-v4.3.0/), replayed
unchanged through the installed ``numanet-cni`` against the real agent, a private real
OVS-DPDK and real host-local IPAM; the kubelet stand-in allocated the device by Allocate
over gRPC, as the v1.32 kubelet did for the recording.

Source: k8snetworkplumbingwg/multus-cni tag v4.3.0, thin plugin, recorded at the CNI
boundary (environment and stdin); see the ``what`` of each file.

What these calls carry that numanet once refused: every CNI_ARGS key twice (Multus'
keys, then the runtime's), ``pciBusID`` beside ``deviceID``, CNI_PATH naming one
directory twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.cni_shim import CNI_BIN, assert_cni_error, leases
from helpers.netns import NetNS, netns
from helpers.ovs import private_ovs
from helpers.ovs_node import OvsNode, ok, prepared_port, running_node
from peers.recorded import Recording, document, load

from cni import errors
from demo.private_ovs import PrivateOvs
from deviceplugin import naming
from vswitch.api import TAG_CONTAINER_ID, TAG_POD_NAME, TAG_PREPARED

__all__ = ["private_ovs"]
pytestmark = pytest.mark.ovs

PEER = "multus-v4.3.0"
ADD = load(PEER, "add")
DEL_AFTER_ADD = load(PEER, "del-after-add")
DEL_AFTER_FAILED_ADD = load(PEER, "del-after-failed-add")
NETWORK = ADD.config["name"]
POD = "pod-a"  # K8S_POD_NAME of the recording
RECORDED_NETNS = ADD.env["CNI_NETNS"]


@pytest.fixture
def node(private_ovs: PrivateOvs) -> Iterator[OvsNode]:
    # The pool's ports on the bridge the recorded network names, so that the port
    # prepared at Allocate is the one the recorded ADD claims.
    with running_node(private_ovs, bridge=ADD.config["bridge"]) as running:
        yield running


@pytest.fixture
def pod_netns() -> Iterator[NetNS]:
    with netns("nnmu") as ns:
        yield ns


def paths(node: OvsNode, ns: NetNS) -> dict[str, str]:
    """Recorded path -> this test's path (the only changes a replay makes)."""
    return {RECORDED_NETNS: ns.path, "/opt/cni/bin": CNI_BIN,
            "/var/lib/cni/networks": str(node.ipam_dir)}


def replay(node: OvsNode, ns: NetNS, call: Recording):
    return call.replay(paths(node, ns), naming.cni_socket(node.run_dir))


def admit_recorded_pod(node: OvsNode) -> str:
    device_id = node.admit(POD)
    # The kubelet gave this pod the device the recording names (lowest free slot).
    assert device_id == ADD.config["deviceID"]
    return device_id


def assert_nothing_left(node: OvsNode) -> None:
    assert node.port_uuids() == {}
    assert node.records() == []
    assert leases(node.ipam_dir, NETWORK) == []


def test_the_recorded_calls_carry_what_numanet_once_refused():
    """The recordings are what the issue says they are: if they were ever 'cleaned', the
    replays below would prove nothing."""
    for call in (ADD, DEL_AFTER_ADD, DEL_AFTER_FAILED_ADD):
        keys = [pair.split("=", 1)[0] for pair in call.env["CNI_ARGS"].split(";")]
        assert keys.count("IgnoreUnknown") == 2 and keys.count("K8S_POD_NAME") == 2
        assert call.env["CNI_PATH"] == "/opt/cni/bin:/opt/cni/bin"
        assert call.config["pciBusID"] == call.config["deviceID"]
    assert "prevResult" in DEL_AFTER_ADD.config and "prevResult" not in DEL_AFTER_FAILED_ADD.config


def test_recorded_add_then_del_succeed_unchanged(node: OvsNode, pod_netns: NetNS):
    device_id = admit_recorded_pod(node)
    prepared = prepared_port(node, device_id)

    add = ok(replay(node, pod_netns, ADD))
    result = add.json
    assert result["cniVersion"] == ADD.config["cniVersion"]
    [iface] = [i for i in result["interfaces"] if i.get("sandbox")]
    assert iface["name"] == ADD.env["CNI_IFNAME"] and iface["sandbox"] == pod_netns.path
    # The address Multus reported in network-status (first of the recorded range).
    status = document(PEER, "network-status")["network-status"][1]
    assert [ip["address"].split("/")[0] for ip in result["ips"]] == status["ips"]
    assert leases(node.ipam_dir, NETWORK) == status["ips"]

    # The port prepared at Allocate was claimed for this pod, not made anew.
    claimed = node.port_row(device_id)
    assert claimed is not None and claimed["_uuid"] == prepared["_uuid"]
    assert TAG_PREPARED not in claimed["external_ids"]
    assert claimed["external_ids"][TAG_POD_NAME] == POD
    assert claimed["external_ids"][TAG_CONTAINER_ID] == ADD.env["CNI_CONTAINERID"]

    # numanet.json in the slot, with the MAC the result gave the pod.
    config = json.loads(node.container_config(device_id).read_text())
    assert config["mac"] == iface["mac"]

    # What Multus put in network-status as device-info is the device plugin's file,
    # byte for byte what the recording shows.
    devinfo = json.loads(node.plugin_devinfo_file(device_id).read_text())
    assert devinfo == status["device-info"]

    ok(replay(node, pod_netns, DEL_AFTER_ADD))
    assert_nothing_left(node)
    assert not node.container_config(device_id).exists()
    # Multus retries a DEL; the second one finds nothing and still succeeds.
    ok(replay(node, pod_netns, DEL_AFTER_ADD))
    assert_nothing_left(node)


def test_recorded_del_after_a_failed_add_succeeds_and_retries(node: OvsNode, pod_netns: NetNS,
                                                              tmp_path: Path):
    device_id = admit_recorded_pod(node)
    prepared_port(node, device_id)
    # The delegate's ADD fails after the port was claimed: host-local cannot use its
    # data directory (a file stands there).
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    failed_paths = {**paths(node, pod_netns), "/var/lib/cni/networks": str(blocked)}
    failed = ADD.replay(failed_paths, naming.cni_socket(node.run_dir))
    assert_cni_error(failed, errors.IPAM_FAILURE, "host-local")

    # What Multus does next: DEL without prevResult, then the same DEL again.
    ok(replay(node, pod_netns, DEL_AFTER_FAILED_ADD))
    ok(replay(node, pod_netns, DEL_AFTER_FAILED_ADD))
    assert node.records() == [] and leases(node.ipam_dir, NETWORK) == []
    assert (node.port_row(device_id) or {}).get("external_ids", {}).get(TAG_POD_NAME) in (None, "")

    # Nothing blocks the pod's next attempt: the recorded ADD and DEL go through.
    ok(replay(node, pod_netns, ADD))
    ok(replay(node, pod_netns, DEL_AFTER_ADD))
    assert_nothing_left(node)


@pytest.mark.parametrize(("change", "code", "word"), [
    # A device ID that would reach a path (the slot directory) or a port name.
    ({"deviceID": "../../etc/passwd", "pciBusID": "../../etc/passwd"},
     errors.INVALID_NETWORK_CONFIG, "deviceID"),
    ({"deviceID": "vhostuser-ovs-n0-000/../../x"}, errors.INVALID_NETWORK_CONFIG, "deviceID"),
    # Another pod's device: the kubelet gave pod-a n0-000 and pod-b n0-001.
    ({"deviceID": "vhostuser-ovs-n0-001", "pciBusID": "vhostuser-ovs-n0-001"},
     errors.DEVICE_NOT_ALLOCATED, "not allocated"),
])
def test_a_hostile_device_id_inside_a_multus_call_is_still_refused(node, pod_netns, change,
                                                                     code, word):
    admit_recorded_pod(node)
    assert node.admit("pod-b") == "vhostuser-ovs-n0-001"
    call = ADD.with_config(**change)
    assert_cni_error(replay(node, pod_netns, call), code, word)
    assert node.records() == [] and leases(node.ipam_dir, NETWORK) == []


@pytest.mark.parametrize(("env", "word"), [
    ({"CNI_IFNAME": "../net1"}, "interface name"),
    ({"CNI_IFNAME": "net1/x"}, "interface name"),
    ({"CNI_CONTAINERID": "../../sandbox"}, "container ID"),
    # The last value of a repeated key wins, as in libcni: so it is the one checked.
    ({"CNI_ARGS": ADD.env["CNI_ARGS"] + ";K8S_POD_NAME=../pod-a"}, "K8S_POD_NAME"),
    ({"CNI_ARGS": ADD.env["CNI_ARGS"] + ";K8S_POD_NAMESPACE=Default"}, "K8S_POD_NAMESPACE"),
])
def test_a_hostile_id_in_a_multus_environment_is_still_refused(node, pod_netns, env, word):
    admit_recorded_pod(node)
    call = replay(node, pod_netns, ADD.with_env(**env))
    assert_cni_error(call, errors.INVALID_ENVIRONMENT, word)
    assert node.records() == [] and leases(node.ipam_dir, NETWORK) == []
