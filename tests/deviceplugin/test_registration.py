"""Registration with the kubelet stand-in over real gRPC on unix sockets."""

from __future__ import annotations

import os
import shutil
import stat
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from helpers.deviceplugin import AgentHarness, short_dir
from helpers.sysfs import four_nodes

from demo.kubelet_standin import KubeletStandin
from demo.kubelet_standin.kubelet import is_extended_resource_name
from deviceplugin.registration import RegistrationError, register
from protos.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc

RESOURCES = ("numanet.io/vhostuser-ovs", "numanet.io/memif-vpp", "numanet.io/dpdk-nic")


def test_every_pool_registers_v1beta1_with_preferred_allocation(two_node_agent: AgentHarness
                                                                ) -> None:
    kubelet = two_node_agent.kubelet
    assert kubelet.wait_for(lambda: len(kubelet.accepted_registrations()) == 3)
    by_resource = {r.resource: r for r in kubelet.accepted_registrations()}
    assert set(by_resource) == set(RESOURCES)
    for resource, registration in by_resource.items():
        pool = resource.split("/")[1]
        assert registration.version == "v1beta1"
        assert registration.endpoint == f"numanet-{pool}.sock"
        assert registration.options.get_preferred_allocation_available is True
        assert registration.options.pre_start_required is False
        # What the kubelet asked over the plugin's own socket agrees.
        assert kubelet.options(resource).get_preferred_allocation_available is True
        sock = two_node_agent.plugin_dir / registration.endpoint
        mode = os.stat(sock).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_two_node_devices_carry_their_numa_node(two_node_agent: AgentHarness) -> None:
    devices = two_node_agent.wait_devices("numanet.io/vhostuser-ovs", lambda d: len(d) == 8)
    assert {d.id: d.numa_nodes for d in devices.values()} == {
        f"vhostuser-ovs-n{n}-{i:03d}": (n,) for n in (0, 1) for i in range(4)}
    assert all(d.healthy for d in devices.values())
    memif = two_node_agent.wait_devices("numanet.io/memif-vpp", lambda d: len(d) == 4)
    assert sorted(memif) == ["memif-vpp-n0-000", "memif-vpp-n0-001", "memif-vpp-n1-000",
                             "memif-vpp-n1-001"]
    nics = two_node_agent.wait_devices("numanet.io/dpdk-nic", lambda d: len(d) == 3)
    assert {d.id: d.numa_nodes for d in nics.values()} == {
        "0000:3b:01.0": (0,), "0000:3b:01.1": (0,), "0000:af:00.1": (1,)}


def test_four_node_devices(make_harness) -> None:
    harness = make_harness(four_nodes)
    devices = harness.wait_devices("numanet.io/vhostuser-ovs", lambda d: len(d) == 16)
    assert sorted({d.numa_nodes for d in devices.values()}) == [(0,), (1,), (2,), (3,)]
    nics = harness.wait_devices("numanet.io/dpdk-nic", lambda d: len(d) == 3)
    assert {d.id: d.numa_nodes for d in nics.values()} == {
        "0000:17:01.0": (0,), "0000:17:01.1": (0,), "0000:98:01.0": (2,)}


def test_agent_started_before_the_kubelet_registers_when_it_appears(make_harness) -> None:
    harness = make_harness(kubelet_first=False)
    kubelet = harness.kubelet
    # The stand-in wiped the directory as a starting kubelet does; the agent must notice.
    assert kubelet.wait_for(lambda: len(kubelet.accepted_registrations()) == 3, timeout=3)
    harness.wait_devices("numanet.io/dpdk-nic", lambda d: len(d) == 3)


class _Plugin(api_pb2_grpc.DevicePluginServicer):
    def GetDevicePluginOptions(self, request, context):
        return api_pb2.DevicePluginOptions()

    def ListAndWatch(self, request, context):
        yield api_pb2.ListAndWatchResponse(devices=[api_pb2.Device(ID="d0", health="Healthy")])


@pytest.fixture
def kubelet_dir() -> Path:
    root = short_dir()
    kubelet = KubeletStandin(root, connect_timeout=0.5).start()
    yield root
    kubelet.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_kubelet_standin_refuses_bad_names_and_versions(kubelet_dir: Path) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_DevicePluginServicer_to_server(_Plugin(), server)
    server.add_insecure_port(f"unix:{kubelet_dir / 'p.sock'}")
    server.start()
    try:
        kubelet_sock = kubelet_dir / "kubelet.sock"
        with pytest.raises(RegistrationError, match="invalid name"):
            register(kubelet_sock, "p.sock", "no-domain")
        with pytest.raises(RegistrationError, match="invalid name"):
            register(kubelet_sock, "p.sock", "kubernetes.io/thing")
        with pytest.raises(ValueError, match="must be a file name"):
            register(kubelet_sock, "../p.sock", "numanet.io/x")
        with pytest.raises(RegistrationError, match="cannot connect"):
            register(kubelet_sock, "absent.sock", "numanet.io/x", timeout=5)
        channel = grpc.insecure_channel(f"unix:{kubelet_sock}")
        with pytest.raises(grpc.RpcError, match="version 'v1alpha' is not supported"):
            api_pb2_grpc.RegistrationStub(channel).Register(
                api_pb2.RegisterRequest(version="v1alpha", endpoint="p.sock",
                                        resource_name="numanet.io/x"), timeout=5)
        channel.close()
        register(kubelet_sock, "p.sock", "numanet.io/x")
    finally:
        server.stop(0)


def test_registration_without_a_kubelet_fails_fast_and_clearly(tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match="does not answer .*is the kubelet running"):
        register(tmp_path / "kubelet.sock", "p.sock", "numanet.io/x", timeout=1)


@pytest.mark.parametrize(("name", "ok"), [
    ("numanet.io/vhostuser-ovs", True), ("example.com/a_b.c", True), ("gpu", False),
    ("kubernetes.io/x", False), ("requests.numanet.io/x", False), ("Numanet.io/x", False),
    ("numanet.io/-x", False), ("numanet.io/x\n", False),
])
def test_extended_resource_names(name: str, ok: bool) -> None:
    assert is_extended_resource_name(name) is ok
