"""The CNI's ownership check with DRA: a device the kubelet lists in a pod's
``dynamic_resources`` (claim -> driver, pool, device) is the pod's, as a device-plugin
device is; another driver's devices and another pod's claims are not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.deviceplugin import short_dir

from cni import errors
from cni.errors import CniError
from cni.podresources import PodResourcesClient
from demo.kubelet_standin.podresources import DynamicAllocation, PodResourcesStandIn

RESOURCE = "numanet.io/vhostuser-ovs"


@pytest.fixture
def client() -> Iterator[PodResourcesClient]:
    root: Path = short_dir("npr-")
    standin = PodResourcesStandIn(root / "kubelet.sock")
    standin.set_dynamic(lambda: [
        DynamicAllocation("default", "pod-a", "app", "net", "default", "numanet.io",
                          "worker-1/vhostuser-ovs", "vhostuser-ovs-n1-000",
                          ("numanet.io/claim=u-vhostuser-ovs-n1-000",)),
        DynamicAllocation("default", "pod-a", "app", "net", "default", "numanet.io",
                          "worker-1/dpdk-nic", "pci-0000-af-00-1"),
        DynamicAllocation("default", "pod-a", "app", "gpu", "default", "gpu.example.com",
                          "worker-1", "gpu-0"),
        DynamicAllocation("default", "pod-b", "app", "other", "default", "numanet.io",
                          "worker-1/vhostuser-ovs", "vhostuser-ovs-n0-001"),
    ])
    standin.start()
    pod_resources = PodResourcesClient(standin.socket, timeout=5.0)
    yield pod_resources
    pod_resources.close()
    standin.stop()


@pytest.mark.parametrize("get_mode", ["Get", "List"])
def test_a_claimed_device_is_the_pods(client: PodResourcesClient, get_mode: str):
    client._use_list = get_mode == "List"
    devices = client.pod_devices("default", "pod-a")
    # The GPU claim's device is no numanet device ID: left out.
    assert devices == {RESOURCE: {"vhostuser-ovs-n1-000"},
                       "numanet.io/dpdk-nic": {"0000:af:00.1"}}
    client.check_allocated("default", "pod-a", RESOURCE, "vhostuser-ovs-n1-000")
    client.check_allocated("default", "pod-a", "numanet.io/dpdk-nic", "0000:af:00.1")


def test_another_pods_claim_is_refused(client: PodResourcesClient):
    with pytest.raises(CniError) as refused:
        client.check_allocated("default", "pod-a", RESOURCE, "vhostuser-ovs-n0-001")
    assert refused.value.code == errors.DEVICE_NOT_ALLOCATED


def test_held_devices_include_claims_so_gc_keeps_them(client: PodResourcesClient):
    held = client.held_devices()
    assert (RESOURCE, "vhostuser-ovs-n1-000") in held
    assert (RESOURCE, "vhostuser-ovs-n0-001") in held
