"""The kubelet DRA plugin over real gRPC: registration through the plugin watcher socket,
NodePrepareResources / NodeUnprepareResources driven by a kubelet stand-in written from
the kubelet's DRA manager, claims read from the API server stand-in over HTTP with the
real kubernetes client, restarts of both sides."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.deviceplugin import check_device_info, short_dir
from helpers.dra import Node, allocated_claim

from demo.apiserver_standin import ApiServerStandin
from demo.kubelet_standin.dra import DraKubeletStandin, DraStandinError
from deviceplugin import naming
from deviceplugin.allocate import Allocator, AllocatorSettings
from dra.checkpoint import ClaimCheckpoint
from dra.kube import KubeResources, api_client
from dra.plugin import DraPlugin, dra_socket
from dra.prepare import Preparer

NODE = "worker-1"
DRIVER = "numanet.io"
VHOST = f"{NODE}/vhostuser-ovs"
NICS = f"{NODE}/dpdk-nic"


@dataclass
class DraNode:
    """The DRA side of an agent (manager, allocator, preparer, plugin) and a kubelet."""

    root: Path
    node: Node
    apiserver: ApiServerStandin
    kube: KubeResources
    plugin: DraPlugin | None = None
    kubelet: DraKubeletStandin | None = None
    allocator: Allocator | None = None
    preparer: Preparer | None = None

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def cdi_dir(self) -> Path:
        return self.root / "cdi"

    @property
    def devinfo_dir(self) -> Path:
        return self.root / "devinfo"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def start_agent(self) -> None:
        manager = self.node.manager
        manager.allocations.load()
        self.allocator = Allocator(AllocatorSettings(run_dir=self.run_dir,
                                                     devinfo_dir=self.devinfo_dir), manager)
        self.allocator.restore()
        checkpoint = ClaimCheckpoint(self.run_dir)
        checkpoint.load()
        self.preparer = Preparer(self.allocator, self.kube, NODE, DRIVER, self.cdi_dir,
                                 checkpoint)
        self.plugin = DraPlugin(self.preparer, self.allocator, self.kubelet_dir, DRIVER)
        self.plugin.start()

    def stop_agent(self) -> None:
        assert self.plugin is not None
        self.plugin.stop()
        self.plugin = None

    def start_kubelet(self, services: tuple[str, ...] | None = None) -> DraKubeletStandin:
        def read(namespace: str, name: str) -> dict | None:
            return self.apiserver.claims.get((namespace, name))

        kwargs = {"services": services} if services else {}
        self.kubelet = DraKubeletStandin(self.kubelet_dir, read, **kwargs).start()
        return self.kubelet

    def claim(self, name: str, pod: str, results: list[tuple[str, str, str]]) -> dict:
        return self.apiserver.add_claim(allocated_claim(name, pod, f"uid-{pod}", results))

    def spec(self, claim: dict) -> dict:
        uid = claim["metadata"]["uid"]
        return json.loads((self.cdi_dir / f"{DRIVER}-claim-{uid}.json").read_text())


@pytest.fixture
def dra(apiserver: ApiServerStandin) -> Iterator[DraNode]:
    root = short_dir("nd-")
    kube = KubeResources(api_client(apiserver.kubeconfig(root / "kubeconfig")))
    node = DraNode(root, Node(root), apiserver, kube)
    node.start_agent()
    node.start_kubelet()
    yield node
    if node.kubelet is not None:
        node.kubelet.stop()
    if node.plugin is not None:
        node.plugin.stop()
    kube.close()
    shutil.rmtree(root, ignore_errors=True)


def test_registers_through_the_plugin_watcher_with_v1_first(dra: DraNode):
    assert dra.kubelet is not None and dra.plugin is not None
    reg = dra.kubelet.wait_registered(DRIVER)
    assert reg.service == "v1.DRAPlugin"
    assert reg.endpoint == str(dra_socket(dra.kubelet_dir, DRIVER))
    assert reg.socket == str(dra.kubelet_dir / "plugins_registry" / f"{DRIVER}-reg.sock")
    assert dra.plugin.wait_registered(5)
    assert not dra.kubelet.refusals


def test_an_older_kubelet_calls_v1beta1(dra: DraNode):
    assert dra.kubelet is not None
    dra.kubelet.stop()
    kubelet = dra.start_kubelet(services=("v1beta1.DRAPlugin",))
    assert kubelet.wait_registered(DRIVER).service == "v1beta1.DRAPlugin"
    claim = dra.claim("net", "pod-a", [("net", VHOST, "vhostuser-ovs-n0-001")])
    cdi = kubelet.prepare_pod("default", "pod-a", "uid-pod-a", ["net"])
    assert cdi == {"net": [f"{DRIVER}/claim={claim['metadata']['uid']}-vhostuser-ovs-n0-001"]}
    assert kubelet.calls[-1] == ("NodePrepareResources", "v1beta1.DRAPlugin", 1)


def test_a_kubelet_without_a_common_service_refuses_the_plugin(dra: DraNode):
    assert dra.kubelet is not None and dra.plugin is not None
    dra.kubelet.stop()
    kubelet = dra.start_kubelet(services=("v2.DRAPlugin",))
    with pytest.raises(DraStandinError):
        kubelet.wait_registered(DRIVER, timeout=1.0)
    assert "none of services supported by the plugin" in kubelet.refusals[0][1]
    assert dra.plugin.state() is not None and not dra.plugin.state().registered


def test_prepare_gives_the_node_1_slot_with_mounts_env_and_device_info(dra: DraNode):
    assert dra.kubelet is not None
    dra.kubelet.wait_registered(DRIVER)
    claim = dra.claim("net", "pod-a", [("net", VHOST, "vhostuser-ovs-n1-000")])
    uid = claim["metadata"]["uid"]
    cdi = dra.kubelet.prepare_pod("default", "pod-a", "uid-pod-a", ["net"])
    assert cdi == {"net": [f"numanet.io/claim={uid}-vhostuser-ovs-n1-000"]}
    spec = dra.spec(claim)
    assert spec["kind"] == "numanet.io/claim" and spec["cdiVersion"]
    (device,) = spec["devices"]
    assert device["name"] == f"{uid}-vhostuser-ovs-n1-000"
    edits = device["containerEdits"]
    assert sorted(edits["env"]) == ["NUMANET_VHOSTUSER_OVS=vhostuser-ovs-n1-000",
                                    "NUMANET_VHOSTUSER_OVS_NUMA=1"]
    slot_dir = naming.slot_dir(dra.run_dir, "vhostuser-ovs-n1-000")
    assert {"hostPath": str(slot_dir), "containerPath":
            "/run/numanet/vhostuser-ovs/vhostuser-ovs-n1-000",
            "options": ["rbind", "rw"]} in edits["mounts"]
    assert slot_dir.is_dir()
    devinfo = naming.devinfo_path("numanet.io/vhostuser-ovs", "vhostuser-ovs-n1-000",
                                  dra.devinfo_dir)
    check_device_info(json.loads(devinfo.read_text()))
    record = dra.node.manager.allocations.get("vhostuser-ovs-n1-000")
    assert record is not None and record.numa_node == 1
    # The kubelet's view: pool and device as published, the request it serves.
    info = dra.kubelet.claim("default", "net")
    assert info is not None and info.devices[0]["pool"] == VHOST
    assert info.devices[0]["requests"] == ["net"]


def test_a_claim_of_a_slot_and_a_nic_puts_env_on_the_first_device_of_each_request(dra: DraNode):
    assert dra.kubelet is not None
    dra.kubelet.wait_registered(DRIVER)
    claim = dra.claim("mix", "pod-b", [
        ("net", VHOST, "vhostuser-ovs-n1-000"), ("net", VHOST, "vhostuser-ovs-n1-001"),
        ("nic", NICS, "pci-0000-af-00-1")])
    cdi = dra.kubelet.prepare_pod("default", "pod-b", "uid-pod-b", ["mix"])
    assert len(cdi["mix"]) == 3
    devices = {d["name"].removeprefix(claim["metadata"]["uid"] + "-"): d["containerEdits"]
               for d in dra.spec(claim)["devices"]}
    assert sorted(devices["vhostuser-ovs-n1-000"]["env"]) == [
        "NUMANET_VHOSTUSER_OVS=vhostuser-ovs-n1-000,vhostuser-ovs-n1-001",
        "NUMANET_VHOSTUSER_OVS_NUMA=1"]
    assert "env" not in devices["vhostuser-ovs-n1-001"]
    nic = devices["pci-0000-af-00-1"]
    assert "PCIDEVICE_NUMANET_IO_DPDK_NIC=0000:af:00.1" in nic["env"]
    assert {n["path"] for n in nic["deviceNodes"]} == {"/dev/vfio/vfio", "/dev/vfio/61"}


def test_prepare_and_unprepare_are_idempotent_and_release_everything(dra: DraNode):
    assert dra.kubelet is not None
    dra.kubelet.wait_registered(DRIVER)
    claim = dra.claim("net", "pod-a", [("net", VHOST, "vhostuser-ovs-n0-000")])
    first = dra.kubelet.prepare_pod("default", "pod-a", "uid-pod-a", ["net"])
    # The kubelet restarts: it forgets that the claim was prepared and asks again.
    dra.kubelet.restart()
    dra.kubelet.wait_registered(DRIVER)
    again = dra.kubelet.prepare_pod("default", "pod-a", "uid-pod-a", ["net"])
    assert again == first
    assert [c[0] for c in dra.kubelet.calls].count("NodePrepareResources") == 2
    dra.kubelet.unprepare_pod("default", "uid-pod-a")
    assert dra.node.manager.allocations.get("vhostuser-ovs-n0-000") is None
    assert not (dra.cdi_dir / f"{DRIVER}-claim-{claim['metadata']['uid']}.json").exists()
    assert not list((dra.run_dir / "dra" / "claims").glob("*.json"))
    # A second Unprepare (the kubelet's answer was lost) succeeds too.
    assert dra.preparer is not None and dra.preparer.unprepare(claim["metadata"]["uid"]) is False


def test_the_agent_restarts_between_prepare_and_unprepare(dra: DraNode):
    assert dra.kubelet is not None
    dra.kubelet.wait_registered(DRIVER)
    claim = dra.claim("net", "pod-a", [("net", VHOST, "vhostuser-ovs-n1-001")])
    first = dra.kubelet.prepare_pod("default", "pod-a", "uid-pod-a", ["net"])
    dra.stop_agent()
    dra.start_agent()  # the checkpoint and the allocation records come back from disk
    dra.kubelet.restart()
    dra.kubelet.wait_registered(DRIVER)
    assert dra.kubelet.prepare_pod("default", "pod-a", "uid-pod-a", ["net"]) == first
    assert dra.node.manager.allocations.get("vhostuser-ovs-n1-001") is not None
    dra.kubelet.unprepare_pod("default", "uid-pod-a")
    assert dra.node.manager.allocations.get("vhostuser-ovs-n1-001") is None
    assert not (dra.cdi_dir / f"{DRIVER}-claim-{claim['metadata']['uid']}.json").exists()


def test_the_plugin_serves_its_sockets_again_when_they_vanish(dra: DraNode):
    assert dra.kubelet is not None and dra.plugin is not None
    first = dra.kubelet.wait_registered(DRIVER)
    dra.plugin.registration_socket.unlink()
    dra.plugin.dra_socket.unlink()
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        reg = dra.kubelet.registrations.get(DRIVER)
        # A new registration (tmpfs may hand the new socket the old inode number).
        if reg is not None and reg.at != first.at:
            break
        time.sleep(0.05)
    assert dra.kubelet.registrations[DRIVER].at != first.at
    dra.claim("net", "pod-a", [("net", VHOST, "vhostuser-ovs-n0-000")])
    assert dra.kubelet.prepare_pod("default", "pod-a", "uid-pod-a", ["net"])


@pytest.mark.parametrize("case", ["held", "other-node", "unknown-device", "not-allocated"])
def test_a_claim_that_cannot_be_prepared_fails_with_its_reason(dra: DraNode, case: str):
    assert dra.kubelet is not None
    dra.kubelet.wait_registered(DRIVER)
    if case == "held":
        dra.claim("first", "pod-a", [("net", VHOST, "vhostuser-ovs-n0-000")])
        dra.kubelet.prepare_pod("default", "pod-a", "uid-pod-a", ["first"])
        dra.claim("net", "pod-b", [("net", VHOST, "vhostuser-ovs-n0-000")])
        reason = "is prepared for ResourceClaim default/first"
    elif case == "other-node":
        dra.claim("net", "pod-b", [("net", "worker-2/vhostuser-ovs", "vhostuser-ovs-n0-000")])
        reason = "not one of node worker-1's pools"
    elif case == "unknown-device":
        dra.claim("net", "pod-b", [("net", VHOST, "vhostuser-ovs-n7-000")])
        reason = "unknown device IDs"
    else:
        claim = allocated_claim("net", "pod-b", "uid-pod-b", [])
        claim["status"]["allocation"]["devices"]["results"] = [
            {"request": "net", "driver": DRIVER, "pool": VHOST, "device": "x"}]
        claim = dra.apiserver.add_claim(claim)
        # Deleted and made again under the same name: another UID than the kubelet's.
        dra.apiserver.claims[("default", "net")] = {
            **claim, "metadata": {**claim["metadata"], "uid": "another"}}
        assert dra.preparer is not None
        from dra.prepare import PrepareError

        with pytest.raises(PrepareError, match="was deleted and made again"):
            dra.preparer.prepare("default", "net", claim["metadata"]["uid"])
        return
    with pytest.raises(DraStandinError, match=reason):
        dra.kubelet.prepare_pod("default", "pod-b", "uid-pod-b", ["net"])
    assert dra.kubelet.claim("default", "net") is not None  # kept, as the kubelet keeps it
