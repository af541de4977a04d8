"""STATUS judges the network it is asked about (CNI 1.1: the config is on stdin): the
vSwitch of the network's pool must answer, other vSwitches do not matter.

The agent here runs the real OVS of the test bed and a VPP backend whose VPP is absent
(the real client, pointed at a socket nothing listens on), as on a node whose VPP is down.
"""

from __future__ import annotations

from cni import errors


def _status(bed, **conf):
    return bed.cni("STATUS", bed.netconf(**conf), ifname="", pod=None)


def test_a_network_on_a_healthy_vswitch_is_ready_while_another_is_down(cni_bed, absent_vpp):
    for conf in ({"pool": "vhostuser-ovs"},
                 {"resourceName": "numanet.io/memif-ovs"},
                 {"pool": "memif-ovs", "resourceName": "numanet.io/memif-ovs"},
                 {"pool": "dpdk-nic"}):  # NICs need no vSwitch at all
        ok = _status(cni_bed, **conf)
        assert ok.rc == 0 and ok.stdout == "", (conf, ok.stdout)


def test_a_network_on_the_vswitch_that_is_down_is_not_ready(cni_bed, absent_vpp):
    for conf in ({"pool": "memif-vpp"}, {"resourceName": "numanet.io/memif-vpp"}):
        down = _status(cni_bed, **conf)
        assert down.rc == 1, down.stdout
        assert down.json["code"] == errors.PLUGIN_NOT_AVAILABLE
        assert "vSwitch vpp" in down.json["msg"] and "pool memif-vpp" in down.json["msg"]
        assert absent_vpp.api_socket in down.json["msg"]  # the reason: where VPP was sought
    # A network naming no pool may get a device of either vSwitch: not ready either.
    anyone = _status(cni_bed)
    assert anyone.rc == 1 and anyone.json["code"] == errors.PLUGIN_NOT_AVAILABLE
    assert "vSwitch vpp" in anyone.json["msg"] and "no pool" in anyone.json["msg"]


def test_a_network_whose_vswitch_the_agent_does_not_run_is_not_ready(cni_bed):
    # The bed's agent runs OVS only; the pool memif-vpp is configured for VPP.
    assert _status(cni_bed).rc == 0
    down = _status(cni_bed, pool="memif-vpp")
    assert down.rc == 1 and down.json["code"] == errors.PLUGIN_NOT_AVAILABLE
    assert "does not run" in down.json["msg"] and "vswitches.vpp" in down.json["details"]


def test_a_network_whose_pool_the_agent_does_not_serve_is_not_ready(cni_bed):
    unknown = _status(cni_bed, pool="no-such-pool")
    assert unknown.rc == 1 and unknown.json["code"] == errors.PLUGIN_NOT_AVAILABLE
    assert "no-such-pool" in unknown.json["msg"] and "config.yaml" in unknown.json["details"]
    other_prefix = _status(cni_bed, resourceName="example.com/vhostuser-ovs")
    assert other_prefix.rc == 1 and other_prefix.json["code"] == errors.PLUGIN_NOT_AVAILABLE
    assert "numanet.io/vhostuser-ovs" in other_prefix.json["msg"]
