"""``numanet-app interfaces``: one entry per numanet interface, merged from numanet.json,
network-status, device-info files and the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.podview import go_quote

from app.podnetinfo import go_unquote, hugepage_budget
from app.roots import Roots
from cni.result import IpConfig, Route
from deviceplugin.devinfo import write_device_info

PEERS = Path(__file__).resolve().parents[1] / "peers" / "multus-v4.3.0"
MAC = "02:00:00:00:00:01"


def _listed(run, pod, *extra):
    ran = run(pod, "interfaces", "--json", *extra)
    assert ran.code == 0, ran.err
    return json.loads(ran.out)["interfaces"], ran.err


def test_a_vhost_user_interface_with_everything_numanet_knows(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0, mac=MAC, mtu=1500,
             ips=(IpConfig("10.56.1.10/24", "10.56.1.1"),), routes=(Route("10.78.0.0/16"),),
             ring_size=512)
    (iface,), err = _listed(run, pod)
    assert err == ""
    assert iface == {
        "network": "default/vhostuser-ovs", "ifname": "net1", "kind": "vhost-user",
        "role": "server", "deviceID": "vhostuser-ovs-n0-000", "pool": "vhostuser-ovs",
        "socketPath": "/run/numanet/vhostuser-ovs/vhostuser-ovs-n0-000/sock",
        "pciAddress": None, "mac": MAC,
        "ips": [{"address": "10.56.1.10/24", "gateway": "10.56.1.1"}],
        "routes": [{"dst": "10.78.0.0/16"}], "mtu": 1500, "queues": None, "numaNode": 0,
        "memifMode": None, "memifId": None, "ringSize": 512, "bufferSize": None,
        "address": None, "peer": None, "sources": ["numanet.json", "network-status"]}


def test_text_for_people(pod, run):
    pod.slot("memif-ovs", "memif", "slave", node=1, mac=MAC, queues=2, ring_size=1024,
             buffer_size=2048, ips=(IpConfig("10.57.0.4/24", "10.57.0.1"),))
    ran = run(pod, "interfaces")
    assert ran.out == (
        "net1 (default/memif-ovs): memif, role slave, ethernet, NUMA node 1\n"
        "  socket  /run/numanet/memif-ovs/memif-ovs-n1-000/sock\n"
        "  device  memif-ovs-n1-000 (pool memif-ovs)\n"
        f"  mac     {MAC}\n"
        "  ips     10.57.0.4/24 gw 10.57.0.1\n"
        "  queues  2\n"
        "  rings   size 1024 buffer 2048\n"
        "  from    numanet.json, network-status\n")


def test_what_multus_v4_3_0_really_wrote_without_numanet_json(pod, run):
    """The recorded annotation alone (no slot mounted here) still names the interface."""
    pod.status[:] = json.loads((PEERS / "network-status.json").read_text())["network-status"]
    (iface,), _ = _listed(run, pod)
    assert iface["network"] == "default/vhostuser-ovs" and iface["ifname"] == "net1"
    assert (iface["kind"], iface["role"]) == ("vhost-user", "server")
    assert iface["socketPath"] == "/run/numanet/vhostuser-ovs/vhostuser-ovs-n0-000/sock"
    assert (iface["deviceID"], iface["pool"]) == ("vhostuser-ovs-n0-000", "vhostuser-ovs")
    assert iface["ips"] == [{"address": "10.56.1.10"}] and iface["mac"] == "26:f7:a9:69:94:be"
    assert iface["numaNode"] == 0  # from the slot ID
    assert iface["sources"] == ["network-status"]


def test_a_slot_whose_network_was_not_attached_is_skipped_with_a_note(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0, config=False, in_status=False)
    listed, err = _listed(run, pod)
    assert listed == []
    assert "note: slot vhostuser-ovs-n0-000" in err and "has no numanet.json yet" in err


def test_device_info_files_fill_in_when_mounted(pod, run):
    slot = pod.slot("memif-ovs", "memif", "slave", node=0, config=False, in_status=False)
    write_device_info(slot, pod.root / "var" / "run" / "k8s.cni.cncf.io" / "devinfo" / "dp")
    (iface,), err = _listed(run, pod)
    assert err == ""
    assert (iface["kind"], iface["role"], iface["memifMode"]) == ("memif", "slave", "ethernet")
    assert iface["socketPath"] == "/run/numanet/memif-ovs/memif-ovs-n0-000/sock"
    assert iface["sources"] == ["device-info"]


def test_a_nic_known_only_from_the_environment(pod, run):
    pod.nic("dpdk-nic", "0000:af:00.1", in_status=False)
    (iface,), _ = _listed(run, pod)
    assert (iface["kind"], iface["pciAddress"], iface["pool"]) == \
        ("dpdk-nic", "0000:af:00.1", "dpdk-nic")
    assert iface["numaNode"] == 1 and iface["sources"] == ["env", "sysfs"]


def test_a_nic_of_unknown_node_takes_numanet_numa_from_the_environment(pod, run):
    pod.nic("dpdk-nic", "0000:00:03.0", in_status=False)
    pod.env["NUMANET_DPDK_NIC_NUMA"] = "1"
    (iface,), _ = _listed(run, pod)
    assert iface["numaNode"] == 1 and iface["sources"] == ["env"]


def test_other_plugins_interfaces_are_not_listed(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    pod.status.append({"name": "default/sriov", "interface": "net5", "device-info": {
        "type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:5e:02.3"}}})
    pod.status.append({"name": "default/other-vhost", "interface": "net6", "device-info": {
        "type": "vhost-user", "version": "1.1.0",
        "vhost-user": {"mode": "client", "path": "/var/lib/other/sock"}}})
    listed, _ = _listed(run, pod)
    assert [i["ifname"] for i in listed] == ["net1"]


def test_order_follows_network_status_else_interface_names(pod, run):
    pod.slot("memif-ovs", "memif", "slave", node=0, ifname="net10")
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0, ifname="net2")
    assert [i["ifname"] for i in _listed(run, pod)[0]] == ["net10", "net2"]
    pod.status[:] = pod.status[:1]  # no network-status for them
    assert [i["ifname"] for i in _listed(run, pod)[0]] == ["net2", "net10"]


def test_status_without_device_info_is_matched_by_interface_name(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0, in_status=False)
    pod.status.append({"name": "team/vhost", "interface": "net1", "ips": ["10.0.0.9"],
                       "mac": MAC})
    (iface,), _ = _listed(run, pod)
    assert iface["network"] == "team/vhost" and iface["mac"] == MAC
    assert iface["ips"] == [{"address": "10.0.0.9"}]
    assert iface["sources"] == ["numanet.json", "network-status"]


def test_memif_in_ip_mode(pod, run):
    pod.slot("memifip-vpp", "memif", "slave", node=0, memif_mode="ip",
             ips=(IpConfig("10.60.0.2/24", "10.60.0.1"),), address="10.60.0.2/24",
             peer="10.60.0.1")
    (iface,), _ = _listed(run, pod)
    assert (iface["memifMode"], iface["address"], iface["peer"]) == \
        ("ip", "10.60.0.2/24", "10.60.0.1")


def test_roots_from_the_environment_and_flags(tmp_path):
    env = {"NUMANET_APP_ROOT": str(tmp_path), "NUMANET_APP_SYSFS": "/elsewhere/sys"}
    roots = Roots.resolve({"mounts": "/m"}, env)
    assert roots.podnetinfo == tmp_path / "etc" / "podnetinfo"
    assert roots.slots == tmp_path / "run" / "numanet"
    assert roots.sysfs == Path("/elsewhere/sys") and roots.mounts == Path("/m")
    assert Roots.resolve({}, {}) == Roots()


def test_root_from_the_environment_reaches_the_cli(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    pod.env["NUMANET_APP_ROOT"] = str(pod.root)  # a pool "app-root" would look so: no IDs
    pod.args = lambda command, *extra: [command, *extra]  # type: ignore[method-assign]
    (iface,), _ = _listed(run, pod)
    assert iface["deviceID"] == "vhostuser-ovs-n0-000"


@pytest.mark.parametrize("text", ["plain", 'quo"te', "back\\slash", "line\nbreak\ttab",
                                  "[{\n \"name\": \"x\"\n}]", "ünïcode", "bell\x07"])
def test_downward_api_quoting_round_trips(text):
    assert go_unquote(go_quote(text)) == text


def test_go_escapes_the_kubelet_may_write():
    assert go_unquote(r'"\x41\u00e9\U0001F600\101\a\v\'"') == "Aé😀A\a\v'"
    for bad in ('"\\q"', '"\\x4"', "unquoted"):
        with pytest.raises(ValueError):
            go_unquote(bad)


def test_hugepage_files_of_the_only_container_are_its(tmp_path):
    (tmp_path / "hugepages_2M_request_app").write_text("512\n")
    (tmp_path / "hugepages_2M_limit_app").write_text("512\n")
    (tmp_path / "hugepages_1G_request_app").write_text("2048\n")
    assert hugepage_budget(tmp_path, None) == ("app", {2048: 512, 1048576: 2048})
    (tmp_path / "hugepages_2M_request_sidecar").write_text("64\n")
    assert hugepage_budget(tmp_path, None) == (None, {})
    assert hugepage_budget(tmp_path, "sidecar") == ("sidecar", {2048: 64})
