"""The kubelet pod-resources client against the stand-in, over real gRPC on a unix socket,
in each of the kubelet behaviours: Get served, Get gated off, Get unknown, kubelet down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cni import errors
from cni.errors import CniError
from cni.podresources import PodResourcesClient, socket_path
from demo.kubelet_standin.podresources import (
    AllocatableDevices,
    PodAllocation,
    PodResourcesStandIn,
)
from protos.podresources.v1 import api_pb2, api_pb2_grpc

RES = "numanet.io/vhostuser-ovs"
ALLOCATIONS = [
    PodAllocation("default", "pod-a", "app", RES, ("vhostuser-ovs-n0-000",), (0,)),
    PodAllocation("default", "pod-a", "sidecar", RES, ("vhostuser-ovs-n0-001",), (0,)),
    PodAllocation("default", "pod-a", "app", "numanet.io/memif-ovs", ("memif-ovs-n1-000",), (1,)),
    PodAllocation("other", "pod-a", "app", RES, ("vhostuser-ovs-n0-002",), (0,)),
]


@pytest.fixture(params=["enabled", "disabled", "unimplemented"])
def kubelet(request, tmp_path: Path) -> Iterator[PodResourcesStandIn]:
    with PodResourcesStandIn(socket_path(tmp_path), ALLOCATIONS, get_mode=request.param,
                             allocatable=[AllocatableDevices(RES, ("vhostuser-ovs-n0-000",),
                                                             (0,))]) as server:
        yield server


@pytest.fixture
def client(kubelet: PodResourcesStandIn) -> Iterator[PodResourcesClient]:
    client = PodResourcesClient(kubelet.socket, timeout=2.0)
    yield client
    client.close()


def test_devices_of_a_pod_in_every_kubelet_mode(client, kubelet):
    devices = client.pod_devices("default", "pod-a")
    assert devices == {RES: {"vhostuser-ovs-n0-000", "vhostuser-ovs-n0-001"},
                       "numanet.io/memif-ovs": {"memif-ovs-n1-000"}}
    # The same name in another namespace is another pod.
    assert client.pod_devices("other", "pod-a") == {RES: {"vhostuser-ovs-n0-002"}}
    assert client.pod_devices("default", "nobody") is None
    # Without Get the client settles on List after the first refusal.
    assert client._use_list == (kubelet.get_mode != "enabled")


def test_check_allocated(client):
    client.check_allocated("default", "pod-a", RES, "vhostuser-ovs-n0-001")
    with pytest.raises(CniError) as foreign:
        client.check_allocated("default", "pod-a", RES, "vhostuser-ovs-n0-002")
    assert foreign.value.code == errors.DEVICE_NOT_ALLOCATED
    assert "vhostuser-ovs-n0-000, vhostuser-ovs-n0-001" in foreign.value.details
    with pytest.raises(CniError) as wrong_resource:
        client.check_allocated("default", "pod-a", "numanet.io/memif-ovs", "vhostuser-ovs-n0-000")
    assert wrong_resource.value.code == errors.DEVICE_NOT_ALLOCATED
    with pytest.raises(CniError) as unknown:
        client.check_allocated("default", "ghost", RES, "vhostuser-ovs-n0-000")
    assert "not known to the kubelet" in unknown.value.msg


def test_held_devices(client):
    assert ("numanet.io/memif-ovs", "memif-ovs-n1-000") in client.held_devices()
    assert len(client.held_devices()) == 4


def test_standin_serves_the_kubelet_shapes(kubelet):
    """What the stand-in answers, read with the generated stub like any kubelet client."""
    with grpc.insecure_channel(f"unix://{kubelet.socket}") as channel:
        stub = api_pb2_grpc.PodResourcesListerStub(channel)
        listed = stub.List(api_pb2.ListPodResourcesRequest(), timeout=2)
        pods = {(p.namespace, p.name): p for p in listed.pod_resources}
        assert sorted(c.name for c in pods["default", "pod-a"].containers) == ["app", "sidecar"]
        allocatable = stub.GetAllocatableResources(api_pb2.AllocatableResourcesRequest(),
                                                   timeout=2)
        assert allocatable.devices[0].topology.nodes[0].ID == 0
        request = api_pb2.GetPodResourcesRequest(pod_name="nobody", pod_namespace="default")
        with pytest.raises(grpc.RpcError) as refused:
            stub.Get(request, timeout=2)
        expected = {"enabled": (grpc.StatusCode.UNKNOWN, "not found"),
                    "disabled": (grpc.StatusCode.UNKNOWN, "Get method disabled"),
                    "unimplemented": (grpc.StatusCode.UNIMPLEMENTED, "")}[kubelet.get_mode]
        assert refused.value.code() == expected[0]
        assert expected[1] in refused.value.details()


def test_kubelet_down_is_try_again_later(tmp_path):
    client = PodResourcesClient(socket_path(tmp_path), timeout=0.5)
    try:
        with pytest.raises(CniError) as down:
            client.check_allocated("default", "pod-a", RES, "vhostuser-ovs-n0-000")
    finally:
        client.close()
    assert down.value.code == errors.TRY_AGAIN_LATER
    # Where numanet looked and what is wrong there, not gRPC's DEADLINE_EXCEEDED.
    assert down.value.msg == f"kubelet pod-resources socket {socket_path(tmp_path)} does not exist"
    assert "--kubelet-dir" in down.value.details


def test_a_file_in_place_of_the_kubelet_socket_is_named(tmp_path):
    path = socket_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("")
    client = PodResourcesClient(path, timeout=0.5)
    try:
        with pytest.raises(CniError) as down:
            client.check_allocated("default", "pod-a", RES, "vhostuser-ovs-n0-000")
    finally:
        client.close()
    assert down.value.code == errors.TRY_AGAIN_LATER
    assert down.value.msg == f"kubelet pod-resources socket {path} is not a socket"


def test_a_kubelet_that_stops_answering_is_named_by_its_grpc_status(tmp_path):
    """A socket that exists but answers nothing: the gRPC status, not 'does not exist'."""
    import socket as pysocket

    path = socket_path(tmp_path)
    path.parent.mkdir(parents=True)
    listener = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    client = PodResourcesClient(path, timeout=0.5)
    try:
        with pytest.raises(CniError) as down:
            client.check_allocated("default", "pod-a", RES, "vhostuser-ovs-n0-000")
    finally:
        client.close()
        listener.close()
    assert down.value.code == errors.TRY_AGAIN_LATER
    assert "did not answer" in down.value.msg and str(path) in down.value.msg


def test_allocations_can_come_from_a_callable(tmp_path):
    current: list[PodAllocation] = []
    with PodResourcesStandIn(socket_path(tmp_path), lambda: current) as kubelet:
        client = PodResourcesClient(kubelet.socket, timeout=2.0)
        try:
            assert client.pod_devices("default", "pod-a") is None
            current.append(ALLOCATIONS[0])
            assert client.pod_devices("default", "pod-a") == {RES: {"vhostuser-ovs-n0-000"}}
        finally:
            client.close()
