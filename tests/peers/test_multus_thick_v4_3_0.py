"""Multus v4.3.0 in thick mode (multus-daemon) executing a numanet delegate
(tests/peers/multus-thick-v4.3.0/), replayed unchanged through the installed
``numanet-cni`` against the real agent, a private real OVS-DPDK and real host-local IPAM.

Source (written from the code, see each file's ``source``): k8snetworkplumbingwg/multus-cni
v4 pkg/server/server.go, pkg/multus/multus.go, pkg/types/conf.go;
network-attachment-definition-client pkg/utils (GetCNIDeviceInfoPath); containernetworking/cni
libcni/api.go, libcni/conf.go, pkg/invoke/args.go.

What thick mode gives a delegate that the thin plugin does not: CNI_ARGS with Multus' five
keys once (the daemon has no CNI_ARGS of its own to append), CNI_PATH with the daemon's
binDir alone, and the daemon's own environment beside the CNI variables. The NAD here
declares the deviceID and CNIDeviceInfoFile capabilities, so libcni also passes
``runtimeConfig``; Multus names the device-info file without an extension, which numanet
once refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.cni_shim import leases
from helpers.netns import NetNS, netns
from helpers.ovs import private_ovs
from helpers.ovs_node import OvsNode, ok, prepared_port, running_node
from peers.recorded import (
    RECORDED_CNI_DEVINFO,
    Recording,
    cni_args,
    load,
    mapped,
    node_paths,
)

from demo.private_ovs import PrivateOvs
from deviceplugin import naming
from vswitch.api import TAG_CONTAINER_ID, TAG_POD_NAME, TAG_PREPARED

__all__ = ["private_ovs"]
pytestmark = pytest.mark.ovs

PEER = "multus-thick-v4.3.0"
ADD = load(PEER, "add")
DEL = load(PEER, "del")
NETWORK = ADD.config["name"]
POD = "pod-a"


@pytest.fixture
def node(private_ovs: PrivateOvs) -> Iterator[OvsNode]:
    with running_node(private_ovs, bridge=ADD.config["bridge"]) as running:
        yield running


@pytest.fixture
def pod_netns() -> Iterator[NetNS]:
    with netns("nnmt") as ns:
        yield ns


def paths(node: OvsNode, ns: NetNS) -> dict[str, str]:
    return node_paths(node, {ADD.env["CNI_NETNS"]: ns.path})


def replay(node: OvsNode, ns: NetNS, call: Recording):
    return call.replay(paths(node, ns), naming.cni_socket(node.run_dir))


def test_the_thick_calls_carry_what_the_daemon_sends():
    for call in (ADD, DEL):
        assert "multus-cni" in call.origin and "server.go" in call.origin
        keys = [key for key, _ in cni_args(call)]
        assert keys == ["IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME",
                        "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"]
        assert call.env["CNI_PATH"] == "/opt/cni/bin"
        assert "MULTUS_NODE_NAME" in call.env  # the daemon's environment goes along
        conf = call.config
        assert conf["deviceID"] == conf["pciBusID"] == conf["runtimeConfig"]["deviceID"]
        devinfo = conf["runtimeConfig"]["CNIDeviceInfoFile"]
        assert devinfo.startswith(RECORDED_CNI_DEVINFO + "/default-vhostuser-ovs-")
        assert devinfo.endswith(f"{call.env['CNI_CONTAINERID']}_net1")  # no extension
    assert "prevResult" in DEL.config and "prevResult" not in ADD.config


def test_thick_add_then_del_succeed_unchanged(node: OvsNode, pod_netns: NetNS):
    device_id = node.admit(POD)
    assert device_id == ADD.config["deviceID"]
    prepared = prepared_port(node, device_id)

    result = ok(replay(node, pod_netns, ADD)).json
    assert result["cniVersion"] == "1.0.0"
    [iface] = result["interfaces"]
    assert iface["name"] == "net1" and iface["sandbox"] == pod_netns.path
    assert [ip["address"] for ip in result["ips"]] == ["10.56.3.10/24"]
    assert leases(node.ipam_dir, NETWORK) == ["10.56.3.10"]
    claimed = node.port_row(device_id)
    assert claimed is not None and claimed["_uuid"] == prepared["_uuid"]
    assert TAG_PREPARED not in claimed["external_ids"]
    assert claimed["external_ids"][TAG_POD_NAME] == POD
    assert claimed["external_ids"][TAG_CONTAINER_ID] == ADD.env["CNI_CONTAINERID"]
    # The device-info file where Multus named it (no .json), read back by Multus into
    # network-status: the device plugin's facts about the slot.
    devinfo = mapped(ADD.config["runtimeConfig"]["CNIDeviceInfoFile"], paths(node, pod_netns))
    written = json.loads(Path(devinfo).read_text())
    assert written == json.loads(node.plugin_devinfo_file(device_id).read_text())

    # The DEL's prevResult is what libcni cached from this very ADD.
    assert mapped(DEL.config["prevResult"], paths(node, pod_netns)) == {
        **result, "interfaces": [{k: iface[k] for k in ("name", "mac", "sandbox")}]}
    ok(replay(node, pod_netns, DEL))
    assert node.port_uuids() == {} and node.records() == []
    assert leases(node.ipam_dir, NETWORK) == []
    assert not node.container_config(device_id).exists()
    assert not Path(devinfo).exists()
    ok(replay(node, pod_netns, DEL))  # Multus may DEL again
