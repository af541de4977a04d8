"""ResourceSlices: the pure builder, then the publisher through the real kubernetes client
and an API server stand-in over HTTP that checks every object against the strict
resource.k8s.io/v1 schema and the API server's own limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.dra import Node

from demo.apiserver_standin import ApiServerStandin
from dra.kube import KubeResources
from dra.publisher import SlicePublisher, SliceSync, dra_pools
from dra.slices import MAX_DEVICES_PER_SLICE, PoolDevices, build_slices

NODE = "worker-1"
DRIVER = "numanet.io"


def _devices(slices: list[dict]) -> dict[str, dict]:
    return {d["name"]: d for s in slices for d in s["spec"].get("devices", [])}


def test_builder_one_pool_per_numanet_pool_with_numa_and_multus_attributes(node: Node):
    slices = build_slices(NODE, DRIVER, dra_pools(node.manager))
    pools = {s["spec"]["pool"]["name"] for s in slices}
    # memif-ovs is served by the device plugin
    assert pools == {f"{NODE}/vhostuser-ovs", f"{NODE}/dpdk-nic"}
    for s in slices:
        assert s["apiVersion"] == "resource.k8s.io/v1" and s["kind"] == "ResourceSlice"
        assert s["spec"]["driver"] == DRIVER and s["spec"]["nodeName"] == NODE
    devices = _devices(slices)
    slot = devices["vhostuser-ovs-n1-001"]["attributes"]
    assert slot == {
        "resource.kubernetes.io/numaNode": {"int": 1},
        "k8s.cni.cncf.io/resourceName": {"string": "numanet.io/vhostuser-ovs"},
        "k8s.cni.cncf.io/deviceID": {"string": "vhostuser-ovs-n1-001"},
        "numanet.io/kind": {"string": "vhost-user"},
        "numanet.io/vswitch": {"string": "ovs"},
        "numanet.io/mode": {"string": "server"},
    }
    assert devices["vhostuser-ovs-n0-000"]["attributes"]["resource.kubernetes.io/numaNode"] \
        == {"int": 0}
    # A NIC: its name is a DNS label, its PCI address and root complex are attributes.
    nic = devices["pci-0000-af-00-1"]["attributes"]
    assert nic["resource.kubernetes.io/pciBusID"] == {"string": "0000:af:00.1"}
    assert nic["resource.kubernetes.io/pcieRoot"] == {"string": "pci0000:af"}
    assert nic["resource.kubernetes.io/numaNode"] == {"int": 1}
    assert nic["k8s.cni.cncf.io/deviceID"] == {"string": "0000:af:00.1"}
    assert "numanet.io/vswitch" not in nic


def test_builder_omits_the_numa_node_when_unknown(node: Node):
    pool = dra_pools(node.manager)[1]
    slot = pool.slots[0]
    from dataclasses import replace

    unknown = PoolDevices(pool.pool, pool.resource, 1, (replace(slot, numa_node=None),))
    (device,) = _devices(build_slices(NODE, DRIVER, [unknown])).values()
    assert "resource.kubernetes.io/numaNode" not in device["attributes"]


def test_builder_splits_a_big_pool_at_the_api_limit(tmp_path: Path):
    node = Node(tmp_path, slots=200)  # 2 nodes x 200 slots = 400 devices
    (pool,) = [p for p in dra_pools(node.manager) if p.pool == "vhostuser-ovs"]
    slices = build_slices(NODE, DRIVER, [pool])
    assert [len(s["spec"]["devices"]) for s in slices] == [128, 128, 128, 16]
    assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {4}
    assert len({s["metadata"]["name"] for s in slices}) == 4
    assert max(len(s["spec"]["devices"]) for s in slices) <= MAX_DEVICES_PER_SLICE


def test_publisher_creates_validated_slices_then_writes_only_changes(
        node: Node, kube: KubeResources, apiserver: ApiServerStandin):
    publisher = SlicePublisher(kube, NODE, DRIVER)
    assert publisher.publish(dra_pools(node.manager)) == 2
    assert not apiserver.refused, apiserver.refused
    assert all(verb == "POST" for verb, _, _ in apiserver.received)
    devices = apiserver.devices(NODE, DRIVER)
    assert (f"{NODE}/vhostuser-ovs", "vhostuser-ovs-n1-000") in devices
    # Nothing changed: nothing written.
    before = len(apiserver.received)
    assert publisher.publish(dra_pools(node.manager)) == 0
    assert len(apiserver.received) == before
    # OVS goes down: its slots leave the slice, the pool's generation moves on.
    node.ovs_healthy = False
    node.refresh()
    assert publisher.publish(dra_pools(node.manager)) == 1
    (vhost,) = [s for s in apiserver.node_slices(NODE) if s["metadata"]["labels"]
                ["numanet.io/pool"] == "vhostuser-ovs"]
    assert "devices" not in vhost["spec"] and vhost["spec"]["pool"]["generation"] == 2
    node.ovs_healthy = True
    node.refresh()
    assert publisher.publish(dra_pools(node.manager)) == 1
    assert len([k for k in apiserver.devices(NODE, DRIVER) if "vhostuser" in k[1]]) == 4
    assert not apiserver.refused


def test_publisher_after_a_restart_keeps_equal_slices_and_moves_generations_on(
        node: Node, kube: KubeResources, apiserver: ApiServerStandin):
    SlicePublisher(kube, NODE, DRIVER).publish(dra_pools(node.manager))
    writes = len(apiserver.received)
    again = SlicePublisher(kube, NODE, DRIVER)  # a new agent: lists what is there
    assert again.publish(dra_pools(node.manager)) == 0
    assert len(apiserver.received) == writes
    # A hotplugged-away NIC: the NIC pool is rewritten at generation 2.
    node.sysfs.remove_pci("0000:af:00.1")
    node.refresh()
    assert again.publish(dra_pools(node.manager)) == 1
    (nics,) = [s for s in apiserver.node_slices(NODE)
               if s["spec"]["pool"]["name"] == f"{NODE}/dpdk-nic"]
    assert nics["spec"]["pool"]["generation"] == 2
    assert "pci-0000-af-00-1" not in _devices([nics])


def test_publisher_shrinks_a_pool_deleting_the_slices_it_no_longer_needs(
        tmp_path: Path, kube: KubeResources, apiserver: ApiServerStandin):
    node = Node(tmp_path, slots=100)  # 200 devices: 2 slices
    publisher = SlicePublisher(kube, NODE, DRIVER)
    publisher.publish(dra_pools(node.manager))
    assert len(apiserver.node_slices(NODE)) == 3
    node.ovs_healthy = False
    node.refresh()
    publisher.publish(dra_pools(node.manager))
    vhost = [s for s in apiserver.node_slices(NODE)
             if s["spec"]["pool"]["name"] == f"{NODE}/vhostuser-ovs"]
    assert len(vhost) == 1 and vhost[0]["spec"]["pool"]["resourceSliceCount"] == 1
    assert not apiserver.refused


def test_publisher_lists_again_after_a_failed_write(
        node: Node, kube: KubeResources, apiserver: ApiServerStandin):
    publisher = SlicePublisher(kube, NODE, DRIVER)
    publisher.publish(dra_pools(node.manager))
    # Someone else changed a slice: our replace conflicts, the next round lists and wins.
    name = apiserver.node_slices(NODE)[0]["metadata"]["name"]
    apiserver.handle("PUT", f"/apis/resource.k8s.io/v1/resourceslices/{name}",
                     {**apiserver.node_slices(NODE)[0], "metadata": {"name": name}})
    node.ovs_healthy = False
    node.refresh()
    from dra.kube import ApiException

    try:
        publisher.publish(dra_pools(node.manager))
    except ApiException as exc:
        assert exc.status == 409
    publisher.publish(dra_pools(node.manager))
    assert not [d for (_, d) in apiserver.devices(NODE, DRIVER) if "vhostuser" in d]


def test_the_stand_in_refuses_what_the_api_server_refuses(apiserver: ApiServerStandin):
    good = build_slices(NODE, DRIVER, [PoolDevices("p", "numanet.io/p", 1, ())])[0]
    bad = {**good, "spec": {**good["spec"], "devices": [{"name": "Not_A_Label"}]}}
    code, _ = apiserver.handle("POST", "/apis/resource.k8s.io/v1/resourceslices", bad)
    assert code == 422
    typo = {**good, "spec": {**good["spec"], "nodename": NODE}}
    code, _ = apiserver.handle("POST", "/apis/resource.k8s.io/v1/resourceslices", typo)
    assert code == 422
    long_value = {**good, "spec": {**good["spec"], "devices": [
        {"name": "d", "attributes": {"numanet.io/x": {"string": "x" * 65}}}]}}
    code, _ = apiserver.handle("POST", "/apis/resource.k8s.io/v1/resourceslices", long_value)
    assert code == 422
    code, _ = apiserver.handle("POST", "/apis/resource.k8s.io/v1/resourceslices", good)
    assert code == 201


def test_slice_sync_follows_the_manager_and_deletes_at_stop(
        node: Node, kube: KubeResources, apiserver: ApiServerStandin):
    sync = SliceSync(SlicePublisher(kube, NODE, DRIVER), node.manager)
    sync.start()
    try:
        assert sync.in_sync.wait(10), sync.last_error
        assert len(apiserver.devices(NODE, DRIVER)) == 7  # 4 slots and 3 NICs on vfio-pci
        node.ovs_healthy = False
        node.refresh()
        assert _wait(lambda: not [d for (_, d) in apiserver.devices(NODE, DRIVER)
                                  if d.startswith("vhostuser")])
    finally:
        sync.stop()
    assert apiserver.node_slices(NODE) == []


def test_slice_sync_retries_while_the_api_server_fails(
        node: Node, kube: KubeResources, apiserver: ApiServerStandin):
    apiserver.fail_next = [500, 503]
    sync = SliceSync(SlicePublisher(kube, NODE, DRIVER), node.manager)
    sync.start()
    try:
        assert sync.in_sync.wait(15), sync.last_error
        assert apiserver.node_slices(NODE)
    finally:
        sync.stop(delete=False)


def _wait(predicate, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
