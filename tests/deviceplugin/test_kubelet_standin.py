"""The kubelet stand-in hands what it allocated to the pod-resources stand-in."""

from __future__ import annotations

import grpc
import pytest
from helpers.deviceplugin import AgentHarness
from helpers.metrics import sample

from demo.kubelet_standin import ContainerSpec, StandinError
from demo.kubelet_standin.podresources import PodResourcesStandIn
from protos.podresources.v1 import api_pb2, api_pb2_grpc

VHOST = "numanet.io/vhostuser-ovs"
NIC = "numanet.io/dpdk-nic"


def test_pod_resources_list_shows_the_standins_allocations(two_node_agent: AgentHarness) -> None:
    harness = two_node_agent
    kubelet = harness.kubelet
    harness.wait_devices(VHOST, lambda d: len(d) == 8 and all(x.healthy for x in d.values()))
    harness.wait_devices(NIC, lambda d: len(d) == 3)
    kubelet.admit_pod("ns", "web", [ContainerSpec("init", {VHOST: 1}, init=True),
                                    ContainerSpec("app", {VHOST: 1, NIC: 1})])
    socket = harness.kubelet_dir / "pod-resources" / "kubelet.sock"
    with PodResourcesStandIn(socket, allocations=kubelet.pod_allocations):
        channel = grpc.insecure_channel(f"unix:{socket}")
        pods = api_pb2_grpc.PodResourcesListerStub(channel).List(
            api_pb2.ListPodResourcesRequest(), timeout=5).pod_resources
        channel.close()
    (pod,) = pods
    assert (pod.namespace, pod.name) == ("ns", "web")
    (container,) = pod.containers  # init containers are not reported once the pod runs
    assert container.name == "app"
    devices = {d.resource_name: (list(d.device_ids), [n.ID for n in d.topology.nodes])
               for d in container.devices}
    assert devices == {VHOST: (["vhostuser-ovs-n0-000"], [0]), NIC: (["0000:3b:01.0"], [0])}


def test_kubelet_calls_are_counted_in_metrics(two_node_agent: AgentHarness) -> None:
    harness = two_node_agent
    harness.wait_devices(NIC, lambda d: len(d) == 3)
    ok_before = sample("numanet_kubelet_calls_total", pool="dpdk-nic", method="Allocate", code="OK")
    bad_before = sample("numanet_kubelet_calls_total", pool="dpdk-nic", method="Allocate",
                                             code="INVALID_ARGUMENT")
    harness.kubelet.allocate(NIC, ["0000:af:00.1"])
    with pytest.raises(StandinError, match="INVALID_ARGUMENT: unknown device IDs"):
        harness.kubelet.allocate(NIC, ["0000:ff:00.0"])
    assert sample("numanet_kubelet_calls_total", pool="dpdk-nic", method="Allocate", code="OK") == \
        ok_before + 1
    assert sample("numanet_kubelet_calls_total", pool="dpdk-nic", method="Allocate",
                                       code="INVALID_ARGUMENT") == bad_before + 1
