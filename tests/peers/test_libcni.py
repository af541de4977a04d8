"""libcni 1.2 and 1.3 running a ``.conflist`` of one numanet plugin
(tests/peers/libcni-1.2/, tests/peers/libcni-1.3/), replayed unchanged through the
installed ``numanet-cni`` against the real agent, a private real OVS-DPDK and real
host-local IPAM.

Source (written from the code, see each file's ``source``): containernetworking/cni
libcni/api.go (buildOneConfig, injectRuntimeConfig, the cached result as prevResult,
GCNetworkList, GetStatusNetworkList), libcni/conf.go (InjectConf; in 1.3
NetworkConfFromBytes with ``cniVersions`` and plugins loaded from
``<confdir>/<network>/*.conf``), pkg/invoke/args.go (AsEnv).

What libcni gives a plugin: its own config with ``name`` and ``cniVersion`` injected and
the keys re-sorted; ``runtimeConfig`` with only the capabilities the plugin declares
(the caller offered ``ips`` and ``bandwidth`` too); on DEL the cached result as
``prevResult``; GC and STATUS with all six CNI variables set, empty but for CNI_PATH.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.cni_shim import leases
from helpers.netns import NetNS, netns
from helpers.ovs import private_ovs
from helpers.ovs_node import OvsNode, ok, prepared_port, running_node
from peers.recorded import Recording, document, load, mapped, node_paths

from cni.mac import stable_mac
from demo.private_ovs import PrivateOvs
from deviceplugin import naming
from vswitch.api import TAG_CONTAINER_ID, TAG_POD_NAME

__all__ = ["private_ovs"]
pytestmark = pytest.mark.ovs

PEERS = ("libcni-1.2", "libcni-1.3")


class Peer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.add = {pod: load(name, f"add-{pod}") for pod in ("pod-a", "pod-b")}
        self.delete = load(name, "del-pod-a")
        self.gc = load(name, "gc")
        self.status = load(name, "status")
        self.network = self.add["pod-a"].config["name"]

    def netns_paths(self, namespaces: dict[str, NetNS]) -> dict[str, str]:
        return {self.add[pod].env["CNI_NETNS"]: ns.path for pod, ns in namespaces.items()}


@pytest.fixture(params=PEERS)
def peer(request: pytest.FixtureRequest) -> Peer:
    return Peer(request.param)


@pytest.fixture
def node(private_ovs: PrivateOvs) -> Iterator[OvsNode]:
    with running_node(private_ovs) as running:
        yield running


@pytest.fixture
def namespaces() -> Iterator[dict[str, NetNS]]:
    with netns("nnla") as a, netns("nnlb") as b:
        yield {"pod-a": a, "pod-b": b}


def replay(node: OvsNode, peer: Peer, namespaces: dict[str, NetNS], call: Recording):
    return call.replay(node_paths(node, peer.netns_paths(namespaces)),
                       naming.cni_socket(node.run_dir))


def test_libcni_calls_are_what_libcni_builds(peer: Peer):
    add = peer.add["pod-a"]
    assert "containernetworking/cni" in add.origin and "libcni/api.go" in add.origin
    conf = add.config
    # name and cniVersion injected, keys sorted (json.Marshal of a map)
    assert list(conf) == sorted(conf)
    assert conf["name"] == peer.network and conf["cniVersion"] == "1.1.0"
    # runtimeConfig: the declared capabilities only
    assert set(conf["runtimeConfig"]) == {k for k, v in conf["capabilities"].items() if v}
    for call in (peer.gc, peer.status):
        assert {k: call.env[k] for k in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_ARGS",
                                         "CNI_IFNAME")} == dict.fromkeys(
            ("CNI_CONTAINERID", "CNI_NETNS", "CNI_ARGS", "CNI_IFNAME"), "")
    if peer.name == "libcni-1.3":
        listed = document(peer.name, "conflist")
        # cniVersions picks 1.1.0 over the list's cniVersion; the plugin file has neither
        # name nor cniVersion of its own
        assert listed["conflist"]["cniVersion"] == "1.0.0"
        assert not {"name", "cniVersion"} & set(listed["plugin-file"]["content"])


def test_libcni_add_del_of_a_conflist(node: OvsNode, peer: Peer,
                                      namespaces: dict[str, NetNS]):
    add = peer.add["pod-a"]
    device_id = node.admit("pod-a")
    assert device_id == add.config["runtimeConfig"]["deviceID"]
    prepared_port(node, device_id)

    result = ok(replay(node, peer, namespaces, add)).json
    [iface] = result["interfaces"]
    assert iface["sandbox"] == namespaces["pod-a"].path
    # runtimeConfig.mac when the plugin declares the "mac" capability, else numanet's own
    assert iface["mac"] == add.config["runtimeConfig"].get(
        "mac", stable_mac(device_id, add.env["CNI_CONTAINERID"]))
    [ip] = [i["address"].split("/")[0] for i in result["ips"]]
    assert leases(node.ipam_dir, peer.network) == [ip]
    port = node.port_row(device_id)
    assert port is not None and port["external_ids"][TAG_POD_NAME] == "pod-a"
    assert port["external_ids"][TAG_CONTAINER_ID] == add.env["CNI_CONTAINERID"]

    # The recorded DEL carries, as prevResult, libcni's cache of exactly this result.
    paths = node_paths(node, peer.netns_paths(namespaces))
    assert mapped(peer.delete.config["prevResult"], paths) == result
    ok(replay(node, peer, namespaces, peer.delete))
    assert node.port_uuids() == {} and node.records() == []
    assert leases(node.ipam_dir, peer.network) == []


def test_libcni_gc_removes_what_is_not_valid_and_keeps_what_is(
        node: OvsNode, peer: Peer, namespaces: dict[str, NetNS]):
    for pod in ("pod-a", "pod-b"):
        prepared_port(node, node.admit(pod))
        ok(replay(node, peer, namespaces, peer.add[pod]))
    kept, stale = node.pods["pod-a"], node.pods["pod-b"]
    assert set(node.port_uuids()) == {kept, stale}

    # pod-b is not in cni.dev/valid-attachments: numanet removes it, keeps pod-a
    ok(replay(node, peer, namespaces, peer.gc))
    assert set(node.port_uuids()) == {kept}
    assert node.records() == [kept]
    assert len(leases(node.ipam_dir, peer.network)) == 1
    ok(replay(node, peer, namespaces, peer.gc))  # nothing more to do: still success
    assert set(node.port_uuids()) == {kept}

    ok(replay(node, peer, namespaces, peer.delete))
    assert node.port_uuids() == {} and leases(node.ipam_dir, peer.network) == []


def test_libcni_status(node: OvsNode, peer: Peer, namespaces: dict[str, NetNS]):
    call = ok(replay(node, peer, namespaces, peer.status))
    assert call.stdout.strip() == ""
