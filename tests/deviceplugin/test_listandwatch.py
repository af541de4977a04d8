"""ListAndWatch: every health or set change reaches the kubelet as a new full list."""

from __future__ import annotations

import shutil

from helpers.deviceplugin import BASE_CONFIG, AgentHarness, InMemoryVSwitchDouble

VHOST = "numanet.io/vhostuser-ovs"
MEMIF = "numanet.io/memif-vpp"
NIC = "numanet.io/dpdk-nic"


def all_healthy(devices: dict) -> bool:
    return bool(devices) and all(d.healthy for d in devices.values())


def test_vswitch_down_and_back_flips_only_its_slots(two_node_agent: AgentHarness) -> None:
    harness = two_node_agent
    harness.wait_devices(VHOST, all_healthy)
    harness.wait_devices(MEMIF, all_healthy)
    ovs = harness.vswitches["ovs"]
    assert isinstance(ovs, InMemoryVSwitchDouble)
    updates = harness.kubelet.updates(VHOST)
    ovs.set_health(False, "ovs-vswitchd does not answer")
    devices = harness.wait_devices(VHOST, lambda d: not any(x.healthy for x in d.values()))
    assert len(devices) == 8  # same IDs, now Unhealthy
    assert harness.kubelet.updates(VHOST) > updates
    assert all_healthy(harness.kubelet.devices(MEMIF))
    reasons = next(p for p in harness.agent.status()["pools"]
                   if p["name"] == "vhostuser-ovs")["unhealthy"]
    assert reasons == {"vSwitch ovs: ovs-vswitchd does not answer": 8}
    ovs.set_health(True)
    harness.wait_devices(VHOST, lambda d: len(d) == 8 and all_healthy(d))


def test_unreachable_vswitch_leaves_slots_unhealthy_and_is_retried(make_harness) -> None:
    ovs = InMemoryVSwitchDouble("ovs", reachable=False)
    harness = make_harness(vswitches={"ovs": ovs, "vpp": InMemoryVSwitchDouble("vpp")})
    devices = harness.wait_devices(VHOST, lambda d: len(d) == 8)
    assert not any(d.healthy for d in devices.values())
    ovs.reachable = True
    harness.wait_devices(VHOST, all_healthy)
    assert ovs.connects == 1


def test_vswitch_placement_narrows_auto_pools(two_node_agent: AgentHarness) -> None:
    harness = two_node_agent
    harness.wait_devices(VHOST, lambda d: len(d) == 8)
    harness.vswitches["ovs"].poll_nodes = frozenset({1})
    devices = harness.wait_devices(VHOST, lambda d: len(d) == 4)
    assert sorted(devices) == [f"vhostuser-ovs-n1-{i:03d}" for i in range(4)]
    assert len(harness.kubelet.devices(MEMIF)) == 4


def test_hugepages_gone_turns_socket_slots_unhealthy(two_node_agent: AgentHarness) -> None:
    harness = two_node_agent
    harness.wait_devices(VHOST, all_healthy)
    shutil.rmtree(harness.hugepages_dir)
    harness.wait_devices(VHOST, lambda d: not any(x.healthy for x in d.values()))
    harness.wait_devices(MEMIF, lambda d: not any(x.healthy for x in d.values()))
    harness.hugepages_dir.mkdir()
    harness.wait_devices(VHOST, all_healthy)


def test_nic_unbound_or_removed_leaves_the_list(two_node_agent: AgentHarness) -> None:
    harness = two_node_agent
    harness.wait_devices(NIC, lambda d: len(d) == 3)
    harness.sysfs.bind("0000:3b:01.0", "iavf", netdev="ens1f0v0")
    devices = harness.wait_devices(NIC, lambda d: len(d) == 2)
    assert "0000:3b:01.0" not in devices
    harness.sysfs.remove_pci("0000:af:00.1")
    assert sorted(harness.wait_devices(NIC, lambda d: len(d) == 1)) == ["0000:3b:01.1"]
    harness.sysfs.bind("0000:3b:01.0", "vfio-pci")
    harness.wait_devices(NIC, lambda d: len(d) == 2)


def test_config_reload_adds_and_removes_pools(two_node_agent: AgentHarness) -> None:
    harness = two_node_agent
    kubelet = harness.kubelet
    harness.wait_devices(MEMIF, lambda d: len(d) == 4)
    extra = BASE_CONFIG.replace("@HUGEPAGES@", str(harness.hugepages_dir)) + """\
  - name: vhost-client
    kind: vhost-user
    vswitch: ovs
    mode: client
    slotsPerNode: 1
    numaNodes: [1]
"""
    harness.write_config(extra)
    devices = harness.wait_devices("numanet.io/vhost-client", lambda d: len(d) == 1)
    assert list(devices) == ["vhost-client-n1-000"]

    # Remove the memif pool: its server stops, its stream ends cleanly, its socket goes.
    without_memif = extra.replace("""  - name: memif-vpp
    kind: memif
    vswitch: vpp
    role: slave
    memifMode: ip
    slotsPerNode: 2
""", "")
    harness.write_config(without_memif)
    assert kubelet.wait_for(lambda: kubelet.stream_ended(MEMIF))
    memif_socket = harness.plugin_dir / "numanet-memif-vpp.sock"
    assert kubelet.wait_for(lambda: not memif_socket.exists())
    assert "memif-vpp" not in harness.agent.manager.pool_names()

    # A broken file is refused; the running config stays.
    harness.write_config("pools: [{name: BAD}]\n")
    harness.agent.refresh()
    assert harness.agent.manager.pool_names() == ("vhostuser-ovs", "dpdk-nic", "vhost-client")


def test_streams_end_cleanly_when_the_agent_stops(two_node_agent: AgentHarness) -> None:
    harness = two_node_agent
    kubelet = harness.kubelet
    harness.wait_devices(VHOST, lambda d: len(d) == 8)
    harness.agent.stop()
    harness.agent = None
    for resource in (VHOST, MEMIF, NIC):
        assert kubelet.wait_for(lambda r=resource: kubelet.stream_ended(r))
        endpoint = kubelet._endpoints[resource]
        assert endpoint.stream_error == ""
    assert sorted(p.name for p in harness.plugin_dir.iterdir()) == ["kubelet.sock"]
