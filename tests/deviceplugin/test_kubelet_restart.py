"""Kubelet restarts: sockets wiped, kubelet.sock re-created -> servers restarted, registered
again with the same device IDs, allocations still valid."""

from __future__ import annotations

import time

from helpers.deviceplugin import AgentHarness

from demo.kubelet_standin import ContainerSpec

VHOST = "numanet.io/vhostuser-ovs"
NIC = "numanet.io/dpdk-nic"
RESOURCES = ("numanet.io/vhostuser-ovs", "numanet.io/memif-vpp", "numanet.io/dpdk-nic")


def test_kubelet_restart_re_registers_every_pool_with_the_same_ids(two_node_agent: AgentHarness
                                                                   ) -> None:
    harness = two_node_agent
    kubelet = harness.kubelet
    before = {r: sorted(harness.wait_devices(r, lambda d: len(d) > 0)) for r in RESOURCES}
    kubelet.admit_pod("ns", "a", [ContainerSpec("c", {VHOST: 1})])
    registrations = len(kubelet.accepted_registrations())

    kubelet.restart()
    # Every socket in the directory was deleted; the agent must come back on its own.
    # (How fast, the 1 s target, is measured by bench/bench_deviceplugin.py.)
    assert kubelet.wait_for(
        lambda: len(kubelet.accepted_registrations()) >= registrations + 3, timeout=10.0), \
        "pools did not register again after the kubelet restart"
    latest = {r.resource for r in kubelet.accepted_registrations()[registrations:]}
    assert latest == set(RESOURCES)
    for resource in RESOURCES:
        count = len(before[resource])
        after = harness.wait_devices(resource, lambda d, n=count: len(d) == n)
        assert sorted(after) == before[resource]
    # The allocation made before the restart is still the kubelet's; new pods avoid it.
    kubelet.admit_pod("ns", "b", [ContainerSpec("c", {VHOST: 1})])
    assert [a.device_ids for a in kubelet.allocations] == [("vhostuser-ovs-n0-000",),
                                                           ("vhostuser-ovs-n0-001",)]
    for plugin in harness.agent.plugins.status():
        assert plugin.registered


def test_own_socket_vanishing_restarts_that_server(two_node_agent: AgentHarness) -> None:
    harness = two_node_agent
    kubelet = harness.kubelet
    harness.wait_devices(NIC, lambda d: len(d) == 3)
    registrations = len(kubelet.accepted_registrations(NIC))
    (harness.plugin_dir / "numanet-dpdk-nic.sock").unlink()
    assert kubelet.wait_for(lambda: len(kubelet.accepted_registrations(NIC)) == registrations + 1,
                            timeout=1.0)
    assert (harness.plugin_dir / "numanet-dpdk-nic.sock").exists()
    harness.wait_devices(NIC, lambda d: len(d) == 3)
    answer = kubelet.allocate(NIC, ["0000:af:00.1"])
    assert answer.envs["PCIDEVICE_NUMANET_IO_DPDK_NIC"] == "0000:af:00.1"
    # The other pools were left alone.
    assert len(kubelet.accepted_registrations(VHOST)) == 1


def test_kubelet_down_for_a_while_then_back(two_node_agent: AgentHarness) -> None:
    harness = two_node_agent
    kubelet = harness.kubelet
    harness.wait_devices(VHOST, lambda d: len(d) == 8)
    kubelet.stop()
    for entry in harness.plugin_dir.iterdir():
        entry.unlink()
    time.sleep(0.5)  # the agent keeps serving and retrying; nothing to register with
    kubelet.start()
    assert kubelet.wait_for(lambda: len(kubelet.accepted_registrations()) == 6, timeout=2.0)
    harness.wait_devices(VHOST, lambda d: len(d) == 8)
