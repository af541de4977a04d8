"""Allocate over real gRPC: mounts, environment, device-info files, slot directories, CDI,
unknown IDs, and allocations surviving an agent restart."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from helpers.deviceplugin import AgentHarness, check_device_info
from helpers.ovs import eventually

from demo.kubelet_standin import ContainerSpec, StandinError
from deviceplugin import naming
from protos.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc

VHOST = "numanet.io/vhostuser-ovs"
MEMIF = "numanet.io/memif-vpp"
NIC = "numanet.io/dpdk-nic"


def ready(harness: AgentHarness) -> AgentHarness:
    harness.wait_devices(VHOST, lambda d: len(d) == 8 and all(x.healthy for x in d.values()))
    harness.wait_devices(MEMIF, lambda d: len(d) == 4 and all(x.healthy for x in d.values()))
    harness.wait_devices(NIC, lambda d: len(d) == 3)
    return harness


def devinfo(harness: AgentHarness, resource: str, device_id: str) -> dict:
    return json.loads(naming.devinfo_path(resource, device_id, harness.devinfo_dir).read_text())


def test_vhost_user_allocate_mounts_env_devinfo_and_slot_dir(two_node_agent: AgentHarness
                                                             ) -> None:
    harness = ready(two_node_agent)
    answers = harness.kubelet.admit_pod("ns1", "pod-a", [ContainerSpec("app", {VHOST: 2})])
    answer = answers["app"][VHOST]
    # Preferred allocation packed both on node 0 with the lowest indexes.
    ids = ["vhostuser-ovs-n0-000", "vhostuser-ovs-n0-001"]
    assert dict(answer.envs) == {"NUMANET_VHOSTUSER_OVS": ",".join(ids),
                                 "NUMANET_VHOSTUSER_OVS_NUMA": "0"}
    mounts = {m.container_path: (m.host_path, m.read_only) for m in answer.mounts}
    assert mounts == {
        f"/run/numanet/vhostuser-ovs/{ids[0]}": (str(harness.run_dir / "s" / ids[0]), False),
        f"/run/numanet/vhostuser-ovs/{ids[1]}": (str(harness.run_dir / "s" / ids[1]), False),
        str(harness.hugepages_dir): (str(harness.hugepages_dir), False),
    }
    assert not answer.devices and not answer.cdi_devices
    for device_id in ids:
        slot_dir = harness.run_dir / "s" / device_id
        info = os.stat(slot_dir)
        assert stat.S_ISDIR(info.st_mode)
        assert (info.st_uid, info.st_gid) == (0, 0)
        # root only without --slot-group: never world-accessible
        assert stat.S_IMODE(info.st_mode) == 0o750
        document = devinfo(harness, VHOST, device_id)
        check_device_info(document)
        assert document == {"type": "vhost-user", "version": "1.1.0", "vhost-user": {
            "mode": "server", "path": f"/run/numanet/vhostuser-ovs/{device_id}/sock"}}
    assert stat.S_IMODE(os.stat(harness.run_dir / "s").st_mode) == 0o711
    assert [a.device_ids for a in harness.kubelet.allocations] == [tuple(ids)]


def test_memif_devinfo_and_numa_env(two_node_agent: AgentHarness) -> None:
    harness = ready(two_node_agent)
    answer = harness.kubelet.allocate(MEMIF, ["memif-vpp-n1-001", "memif-vpp-n0-000"])
    assert answer.envs["NUMANET_MEMIF_VPP"] == "memif-vpp-n1-001,memif-vpp-n0-000"
    assert answer.envs["NUMANET_MEMIF_VPP_NUMA"] == "0,1"
    document = devinfo(harness, MEMIF, "memif-vpp-n1-001")
    check_device_info(document)
    assert document == {"type": "memif", "version": "1.1.0", "memif": {
        "role": "slave", "mode": "ip", "path": "/run/numanet/memif-vpp/memif-vpp-n1-001/sock"}}


def test_nic_allocate_gives_vfio_nodes_and_pcidevice_env(two_node_agent: AgentHarness) -> None:
    harness = ready(two_node_agent)
    answer = harness.kubelet.allocate(NIC, ["0000:3b:01.1"])
    assert {(d.container_path, d.host_path, d.permissions) for d in answer.devices} == {
        ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"), ("/dev/vfio/32", "/dev/vfio/32", "rw")}
    assert answer.envs["PCIDEVICE_NUMANET_IO_DPDK_NIC"] == "0000:3b:01.1"
    assert answer.envs["NUMANET_DPDK_NIC"] == "0000:3b:01.1"
    assert answer.envs["NUMANET_DPDK_NIC_NUMA"] == "0"
    assert [m.container_path for m in answer.mounts] == [str(harness.hugepages_dir)]
    document = devinfo(harness, NIC, "0000:3b:01.1")
    check_device_info(document)
    assert document == {"type": "pci", "version": "1.1.0", "pci": {
        "pci-address": "0000:3b:01.1", "pf-pci-address": "0000:3b:00.0"}}


def test_unknown_device_ids_are_invalid_argument_naming_them(two_node_agent: AgentHarness
                                                             ) -> None:
    harness = ready(two_node_agent)
    sock = harness.plugin_dir / "numanet-vhostuser-ovs.sock"
    channel = grpc.insecure_channel(f"unix:{sock}")
    stub = api_pb2_grpc.DevicePluginStub(channel)
    request = api_pb2.AllocateRequest(container_requests=[api_pb2.ContainerAllocateRequest(
        devices_ids=["vhostuser-ovs-n0-000", "vhostuser-ovs-n7-000", "memif-vpp-n0-000",
                     "../../etc"])])
    with pytest.raises(grpc.RpcError) as err:
        stub.Allocate(request, timeout=5)
    channel.close()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert "unknown device IDs for resource numanet.io/vhostuser-ovs" in details
    # Another pool's ID and a path are as unknown here as an ID that does not exist.
    for bad in ("vhostuser-ovs-n7-000", "memif-vpp-n0-000", "'../../etc'"):
        assert bad in details
    assert "vhostuser-ovs-n0-000," not in details
    # Nothing was prepared for the request that failed.
    assert not (harness.run_dir / "s" / "vhostuser-ovs-n0-000").exists()
    assert not harness.devinfo_dir.exists() or not any(harness.devinfo_dir.iterdir())


def test_preferred_allocation_errors_reach_the_kubelet(two_node_agent: AgentHarness) -> None:
    harness = ready(two_node_agent)
    with pytest.raises(grpc.RpcError) as err:
        harness.kubelet.preferred(VHOST, ["vhostuser-ovs-n0-000"], [], 2)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "allocation_size 2 is more than the 1 available devices" in err.value.details()


def test_pods_get_disjoint_slots_and_must_include_is_honoured(two_node_agent: AgentHarness
                                                              ) -> None:
    harness = ready(two_node_agent)
    kubelet = harness.kubelet
    kubelet.admit_pod("ns", "a", [ContainerSpec("c", {VHOST: 3})])
    kubelet.admit_pod("ns", "b", [ContainerSpec("c", {VHOST: 2})])
    a, b = (x.device_ids for x in kubelet.allocations)
    assert a == ("vhostuser-ovs-n0-000", "vhostuser-ovs-n0-001", "vhostuser-ovs-n0-002")
    # Only one slot left on node 0: two slots fit on node 1, so both come from there.
    assert b == ("vhostuser-ovs-n1-000", "vhostuser-ovs-n1-001")
    # An init container's devices are reused by the app container (must_include).
    kubelet.admit_pod("ns", "c", [ContainerSpec("init", {VHOST: 1}, init=True),
                                  ContainerSpec("app", {VHOST: 2})])
    init, app = kubelet.allocations[2:]
    assert init.device_ids == ("vhostuser-ovs-n0-003",)
    assert app.device_ids[0] == "vhostuser-ovs-n0-003"
    assert len(set(app.device_ids)) == 2
    with pytest.raises(StandinError, match="2 requested, 1 available"):
        kubelet.admit_pod("ns", "d", [ContainerSpec("c", {VHOST: 2})])


def test_listeners_hear_of_an_allocation_once_the_kubelet_has_its_answer(
        two_node_agent: AgentHarness) -> None:
    harness = ready(two_node_agent)
    assert harness.agent is not None
    heard: list[tuple[str, ...]] = []
    answered = threading.Event()

    def listener(slots: list) -> None:
        # Runs after the answer went out: the kubelet's call has returned by now.
        assert answered.wait(5)
        heard.append(tuple(s.device_id for s in slots))

    def broken(slots: list) -> None:
        raise RuntimeError("a listener bug")

    harness.agent.allocator.on_allocated(broken)
    harness.agent.allocator.on_allocated(listener)
    ids = ["vhostuser-ovs-n1-001", "vhostuser-ovs-n0-003"]
    harness.kubelet.allocate(VHOST, ids)  # the broken listener does not fail Allocate
    answered.set()
    eventually(lambda: heard)
    assert heard == [tuple(ids)]
    with pytest.raises(StandinError, match="unknown device IDs"):
        harness.kubelet.allocate(VHOST, ["vhostuser-ovs-n9-000"])
    time.sleep(0.2)
    assert heard == [tuple(ids)]  # a refused Allocate gives nothing out


def test_a_release_judged_on_an_older_allocation_leaves_the_new_one(
        two_node_agent: AgentHarness) -> None:
    harness = ready(two_node_agent)
    assert harness.agent is not None
    allocator = harness.agent.allocator
    device = "vhostuser-ovs-n0-001"
    harness.kubelet.allocate(VHOST, [device])
    judged = allocator.all()[device]
    time.sleep(0.01)
    harness.kubelet.allocate(VHOST, [device])  # the kubelet gave it out again meanwhile
    info = naming.devinfo_path(VHOST, device, harness.devinfo_dir)
    assert not allocator.release(device, judged)
    assert info.exists() and device in allocator.all()
    assert allocator.release(device, allocator.all()[device])
    assert not info.exists() and device not in allocator.all()


def test_slot_group_makes_slot_dirs_group_writable(make_harness) -> None:
    # --slot-group 100: that group may create (container-side server) and use the socket.
    harness = ready(make_harness(slot_group=100))
    harness.kubelet.allocate(VHOST, ["vhostuser-ovs-n1-002"])
    info = os.stat(harness.run_dir / "s" / "vhostuser-ovs-n1-002")
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 100, 0o770)


def test_a_symlink_in_place_of_a_slot_dir_is_refused(two_node_agent: AgentHarness,
                                                     tmp_path: Path) -> None:
    harness = ready(two_node_agent)
    (harness.run_dir / "s").mkdir(parents=True, exist_ok=True)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (harness.run_dir / "s" / "vhostuser-ovs-n1-000").symlink_to(target)
    with pytest.raises(StandinError, match="INTERNAL: cannot prepare devices"):
        harness.kubelet.allocate(VHOST, ["vhostuser-ovs-n1-000"])
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700  # not chmod-ed through the link
    assert not naming.devinfo_path(VHOST, "vhostuser-ovs-n1-000", harness.devinfo_dir).exists()


def test_cdi_mode_names_cdi_devices_and_writes_specs(make_harness) -> None:
    harness = ready(make_harness(cdi=True))
    answer = harness.kubelet.allocate(VHOST, ["vhostuser-ovs-n0-002"])
    assert [d.name for d in answer.cdi_devices] == ["numanet.io/slot=vhostuser-ovs-n0-002"]
    assert not answer.mounts and not answer.devices
    assert answer.envs["NUMANET_VHOSTUSER_OVS"] == "vhostuser-ovs-n0-002"
    spec = json.loads((harness.cdi_dir / "numanet.io-slot-vhostuser-ovs-n0-002.json").read_text())
    assert spec["cdiVersion"] == "0.6.0" and spec["kind"] == "numanet.io/slot"
    (device,) = spec["devices"]
    assert device["name"] == "vhostuser-ovs-n0-002"
    assert {m["containerPath"]: m["hostPath"] for m in device["containerEdits"]["mounts"]} == {
        "/run/numanet/vhostuser-ovs/vhostuser-ovs-n0-002":
            str(harness.run_dir / "s" / "vhostuser-ovs-n0-002"),
        str(harness.hugepages_dir): str(harness.hugepages_dir)}
    nic = harness.kubelet.allocate(NIC, ["0000:af:00.1"])
    spec = json.loads((harness.cdi_dir / "numanet.io-slot-0000:af:00.1.json").read_text())
    assert [n["path"] for n in spec["devices"][0]["containerEdits"]["deviceNodes"]] == \
        ["/dev/vfio/vfio", "/dev/vfio/61"]
    assert [d.name for d in nic.cdi_devices] == ["numanet.io/slot=0000:af:00.1"]
    # CDI specs outlive the agent (a container restart needs them); release removes them.
    specs = sorted(p.name for p in harness.cdi_dir.iterdir())
    assert specs == ["numanet.io-slot-0000:af:00.1.json",
                     "numanet.io-slot-vhostuser-ovs-n0-002.json"]
    harness.restart_agent()
    assert sorted(p.name for p in harness.cdi_dir.iterdir()) == specs
    assert harness.agent.allocator.release("0000:af:00.1")
    assert sorted(p.name for p in harness.cdi_dir.iterdir()) == specs[1:]


def test_allocations_and_devinfo_survive_an_agent_restart_and_go_at_shutdown(
        two_node_agent: AgentHarness) -> None:
    harness = ready(two_node_agent)
    harness.kubelet.admit_pod("ns", "a", [ContainerSpec("c", {VHOST: 1, NIC: 1})])
    files = sorted(p.name for p in harness.devinfo_dir.iterdir())
    assert files == ["numanet.io-dpdk-nic-0000:3b:01.0-device.json",
                     "numanet.io-vhostuser-ovs-vhostuser-ovs-n0-000-device.json"]
    assert set(harness.agent.manager.allocations.all()) == {"vhostuser-ovs-n0-000",
                                                            "0000:3b:01.0"}
    harness.restart_agent()
    # The new agent knows what was allocated and re-wrote the device-info files.
    assert set(harness.agent.manager.allocations.all()) == {"vhostuser-ovs-n0-000",
                                                            "0000:3b:01.0"}
    assert sorted(p.name for p in harness.devinfo_dir.iterdir()) == files
    status = harness.agent.status()
    vhost = next(p for p in status["pools"] if p["name"] == "vhostuser-ovs")
    assert vhost["nodes"][0] == {"numa": 0, "total": 4, "healthy": 4, "used": 1, "free": 3}
    # Release (what the CNI's GC calls) frees the slot and removes its device-info file.
    assert harness.agent.allocator.release("vhostuser-ovs-n0-000")
    assert not harness.agent.allocator.release("vhostuser-ovs-n0-000")
    assert sorted(p.name for p in harness.devinfo_dir.iterdir()) == files[:1]
    status = harness.agent.status()
    vhost = next(p for p in status["pools"] if p["name"] == "vhostuser-ovs")
    assert vhost["nodes"][0]["used"] == 0
    harness.agent.stop()
    harness.agent = None
    assert list(harness.devinfo_dir.iterdir()) == []


def test_slot_metrics_follow_allocations(make_harness) -> None:
    harness = make_harness(start=False)
    harness.metrics_address = "127.0.0.1:0"
    ready(harness.start())
    harness.kubelet.allocate(NIC, ["0000:af:00.1"])
    port = harness.agent.metrics_server.port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        body = answer.read().decode()
    for line in ('numanet_slots_total{numa_node="1",pool="dpdk-nic"} 1.0',
                 'numanet_slots_used{numa_node="1",pool="dpdk-nic"} 1.0',
                 'numanet_slots_total{numa_node="0",pool="dpdk-nic"} 2.0',
                 'numanet_slots_used{numa_node="0",pool="dpdk-nic"} 0.0',
                 'numanet_slots_total{numa_node="1",pool="vhostuser-ovs"} 4.0',
                 'numanet_slots_used{numa_node="1",pool="vhostuser-ovs"} 0.0'):
        assert line in body.splitlines(), (line, body)
