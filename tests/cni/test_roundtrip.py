"""ADD / CHECK / DEL / GC / STATUS through the real ``numanet-cni`` executable, as a runtime
calls it, against real OVS-DPDK, real host-local IPAM and real network namespaces."""

from __future__ import annotations

import json
import os
import stat

import pytest
from helpers.netns import netns
from helpers.ovs import interface

from cni import errors
from cni.commands import replay
from vswitch.api import TAG_CONTAINER_ID, TAG_DEVICE_ID, TAG_IFNAME, TAG_POD_NAME

pytestmark = pytest.mark.ovs


def test_add_check_del_round_trip(cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 0)
    slot = cni_bed.allocate("default", "pod-a", dev)
    devinfo = cni_bed.devinfo_root / "cni" / "pod-a-net1-device.json"
    conf = cni_bed.netconf(dev, mtu=9000, vlan=42,
                           runtimeConfig={"CNIDeviceInfoFile": str(devinfo)})

    add = cni_bed.cni("ADD", conf, "c0ffee01", netns_path=pod_netns.path)
    assert add.rc == 0, add.stdout
    result = add.json
    assert result["cniVersion"] == "1.1.0"
    [iface] = result["interfaces"]
    assert iface["name"] == "net1"
    assert iface["sandbox"] == pod_netns.path
    assert iface["socketPath"] == f"/run/numanet/vhostuser-ovs/{dev}/sock"
    assert iface["mtu"] == 9000
    mac = iface["mac"]
    assert int(mac[:2], 16) & 0b11 == 0b10  # locally administered, unicast
    [ip] = result["ips"]
    assert ip["address"].startswith("10.77.0.") and ip["gateway"] == "10.77.0.1"
    assert ip["interface"] == 0
    assert result["routes"] == [{"dst": "10.78.0.0/16"}]

    # The port: one, on the bed's bridge, tagged with the pod, plumbed as the slot says.
    [port] = cni_bed.ports()
    ids = port["external_ids"]
    assert ids[TAG_DEVICE_ID] == dev and ids[TAG_CONTAINER_ID] == "c0ffee01"
    assert ids[TAG_POD_NAME] == "pod-a" and ids[TAG_IFNAME] == "net1"
    assert port["tag"] == 42
    row = interface(cni_bed.ovs, port["name"])
    assert row["type"] == "dpdkvhostuserclient"
    assert row["options"]["vhost-server-path"] == str(slot.host_socket)
    assert row["mtu_request"] == 9000

    # What the container reads.
    cfg = json.loads((slot.host_dir / "numanet.json").read_text())
    assert cfg["deviceID"] == dev and cfg["kind"] == "vhost-user" and cfg["mode"] == "server"
    assert cfg["socketPath"] == iface["socketPath"] and cfg["mac"] == mac
    assert cfg["ips"] == [{"address": ip["address"], "gateway": "10.77.0.1"}]
    assert cfg["numaNode"] == 0 and cfg["mtu"] == 9000 and cfg["network"] == cni_bed.network
    info = json.loads(devinfo.read_text())
    assert info == {"type": "vhost-user", "version": "1.1.0",
                    "vhost-user": {"mode": "server", "path": iface["socketPath"]}}
    assert cni_bed.leases() == [ip["address"].split("/")[0]]

    check = cni_bed.cni("CHECK", {**conf, "prevResult": result}, "c0ffee01",
                        netns_path=pod_netns.path)
    assert check.rc == 0, check.stdout
    assert check.stdout == ""

    delete = cni_bed.cni("DEL", {**conf, "prevResult": result}, "c0ffee01",
                         netns_path=pod_netns.path)
    assert delete.rc == 0, delete.stdout
    cni_bed.assert_clean()
    # DEL is idempotent: the second one finds nothing and still succeeds.
    again = cni_bed.cni("DEL", conf, "c0ffee01", netns_path=pod_netns.path)
    assert again.rc == 0, again.stdout
    cni_bed.assert_clean()


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
def test_result_in_the_callers_version(cni_bed, pod_netns, version):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 1)
    cni_bed.allocate("default", "pod-a", dev)
    conf = cni_bed.netconf(dev, cniVersion=version)
    add = cni_bed.cni("ADD", conf, "c1", netns_path=pod_netns.path)
    assert add.rc == 0, add.stdout
    result = add.json
    assert result["cniVersion"] == version
    [ip] = result["ips"]
    if version < "1.0.0":
        assert ip["version"] == "4"  # the pre-1.0 shape host-local 1.0 does not give us
    else:
        assert "version" not in ip
    assert "socketPath" not in result["interfaces"][0]  # a 1.1.0 field
    if version >= "0.4.0":
        check = cni_bed.cni("CHECK", {**conf, "prevResult": result}, "c1",
                            netns_path=pod_netns.path)
        assert check.rc == 0, check.stdout
    assert cni_bed.cni("DEL", conf, "c1", netns_path=pod_netns.path).rc == 0
    cni_bed.assert_clean()


def test_dual_stack_in_an_old_version(cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 6)
    cni_bed.allocate("default", "pod-a", dev)
    ipam = {"type": "host-local", "dataDir": str(cni_bed.ipam_dir),
            "ranges": [[{"subnet": "10.77.1.0/24"}], [{"subnet": "fd00:77::/64"}]]}
    add = cni_bed.cni("ADD", cni_bed.netconf(dev, cniVersion="0.3.1", ipam=ipam), "c6",
                      netns_path=pod_netns.path)
    assert add.rc == 0, add.stdout
    families = sorted((ip["version"], ip["address"].split("/")[1]) for ip in add.json["ips"])
    assert families == [("4", "24"), ("6", "64")]
    assert cni_bed.cni("DEL", cni_bed.netconf(dev, cniVersion="0.3.1", ipam=ipam), "c6").rc == 0
    cni_bed.assert_clean()


def test_dpdk_nic_gets_address_and_device_info_without_a_port(cni_bed, pod_netns):
    nic = "0000:3b:02.1"
    cni_bed.allocate("default", "pod-a", nic)
    devinfo = cni_bed.devinfo_root / "cni" / "pod-a-net1-device.json"
    conf = cni_bed.netconf(nic, pool="dpdk-nic",
                           runtimeConfig={"CNIDeviceInfoFile": str(devinfo)})
    add = cni_bed.cni("ADD", conf, "c7", netns_path=pod_netns.path)
    assert add.rc == 0, add.stdout
    [iface] = add.json["interfaces"]
    assert iface["pciID"] == nic and "socketPath" not in iface
    assert cni_bed.ports() == [] and len(cni_bed.leases()) == 1
    assert json.loads(devinfo.read_text()) == {
        "type": "pci", "version": "1.1.0",
        "pci": {"pci-address": nic, "pf-pci-address": "0000:3b:00.0"}}
    assert cni_bed.cni("CHECK", {**conf, "prevResult": add.json}, "c7",
                       netns_path=pod_netns.path).rc == 0
    assert cni_bed.cni("DEL", conf, "c7").rc == 0
    cni_bed.assert_clean()


def test_del_removes_the_socket_the_container_left_so_the_next_pod_can_bind(cni_bed,
                                                                          pod_netns):
    """A vhost-user server container binds <slot>/sock; after it is gone the file stays,
    and the next pod on the slot would get EADDRINUSE. DEL clears it (sockets only)."""
    import socket

    dev = cni_bed.slots.device_id("vhostuser-ovs", 0)
    slot = cni_bed.allocate("default", "pod-a", dev)
    conf = cni_bed.netconf(dev)
    add = cni_bed.cni("ADD", conf, "c0ffee0a", netns_path=pod_netns.path)
    assert add.rc == 0, add.stdout
    app = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # the container's DPDK app
    app.bind(str(slot.host_socket))
    app.listen(1)
    app.close()  # the app exits; the socket file stays behind
    assert stat.S_ISSOCK(os.lstat(slot.host_socket).st_mode)

    delete = cni_bed.cni("DEL", conf, "c0ffee0a", netns_path=pod_netns.path)
    assert delete.rc == 0, delete.stdout
    assert not slot.host_socket.exists()
    cni_bed.assert_clean()
    # The next pod's app can bind the same path.
    cni_bed.allocate("default", "pod-b", dev)
    add = cni_bed.cni("ADD", conf, "c0ffee0b", netns_path=pod_netns.path,
                      pod=("default", "pod-b"))
    assert add.rc == 0, add.stdout
    app = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    app.bind(str(slot.host_socket))
    app.close()
    assert cni_bed.cni("DEL", conf, "c0ffee0b", netns_path=pod_netns.path,
                       pod=("default", "pod-b")).rc == 0
    cni_bed.assert_clean()


def test_del_of_a_nic_asks_no_vswitch(cni_bed, pod_netns, absent_vpp):
    """A NIC has no port: its DEL, repeated as runtimes do, succeeds while a vSwitch is
    down, because no vSwitch is asked about it."""
    nic = "0000:3b:02.0"
    cni_bed.allocate("default", "pod-a", nic)
    conf = cni_bed.netconf(nic, pool="dpdk-nic")
    assert cni_bed.cni("ADD", conf, "n1", netns_path=pod_netns.path).rc == 0
    for _ in range(2):  # the second finds no record
        delete = cni_bed.cni("DEL", conf, "n1")
        assert delete.rc == 0, delete.stdout
    cni_bed.assert_clean()


def test_vhost_client_mode_and_memif(cni_bed, pod_netns):
    vhost = cni_bed.slots.device_id("vhostc-ovs", 0)
    memif = cni_bed.slots.device_id("memif-ovs", 0)
    for dev in (vhost, memif):
        cni_bed.allocate("default", "pod-a", dev)
    a = cni_bed.cni("ADD", cni_bed.netconf(vhost), "c2", ifname="net1", netns_path=pod_netns.path)
    b = cni_bed.cni("ADD", cni_bed.netconf(memif), "c2", ifname="net2", netns_path=pod_netns.path)
    assert a.rc == 0 and b.rc == 0, (a.stdout, b.stdout)
    vhost_slot, memif_slot = cni_bed.slots.slot(vhost), cni_bed.slots.slot(memif)
    # Container is the client: OVS serves, and its socket shows up in the slot directory.
    assert stat.S_ISSOCK(os.stat(vhost_slot.host_socket).st_mode)
    assert json.loads((vhost_slot.host_dir / "numanet.json").read_text())["mode"] == "client"
    memif_cfg = json.loads((memif_slot.host_dir / "numanet.json").read_text())
    assert memif_cfg["kind"] == "memif" and memif_cfg["role"] == "slave"
    assert memif_cfg["memifId"] == 0 and memif_cfg["memifMode"] == "ethernet"
    types = sorted(interface(cni_bed.ovs, p["name"])["type"] for p in cni_bed.ports())
    assert types == ["dpdk", "dpdkvhostuser"]
    assert len(cni_bed.leases()) == 2
    assert cni_bed.cni("DEL", cni_bed.netconf(vhost), "c2", ifname="net1").rc == 0
    assert cni_bed.cni("DEL", cni_bed.netconf(memif), "c2", ifname="net2").rc == 0
    assert not os.path.exists(vhost_slot.host_socket)
    cni_bed.assert_clean()


def test_del_without_device_id_netns_or_kubelet(cni_bed):
    """DEL after the pod is gone everywhere: no deviceID in the config (Multus lost its
    cache), netns deleted, pod no longer in pod-resources. Everything is still released."""
    dev = cni_bed.slots.device_id("vhostuser-ovs", 2)
    cni_bed.allocate("default", "pod-a", dev)
    with netns("nncni") as ns:
        add = cni_bed.cni("ADD", cni_bed.netconf(dev), "c3", netns_path=ns.path)
        assert add.rc == 0, add.stdout
    cni_bed.forget_pod("default", "pod-a")
    delete = cni_bed.cni("DEL", cni_bed.netconf(), "c3")
    assert delete.rc == 0, delete.stdout
    cni_bed.assert_clean()


def test_del_of_an_older_attachment_leaves_the_new_holder_alone(cni_bed, pod_netns):
    """The kubelet gave the device to a new sandbox before the old one's DEL came."""
    dev = cni_bed.slots.device_id("vhostuser-ovs", 3)
    cni_bed.allocate("default", "pod-a", dev)
    old = cni_bed.cni("ADD", cni_bed.netconf(dev), "old1", netns_path=pod_netns.path)
    new = cni_bed.cni("ADD", cni_bed.netconf(dev), "new1", netns_path=pod_netns.path)
    assert old.rc == 0 and new.rc == 0, (old.stdout, new.stdout)
    [port] = cni_bed.ports()  # taken over: still one port, now the new sandbox's
    assert port["external_ids"][TAG_CONTAINER_ID] == "new1"
    assert len(cni_bed.leases()) == 1  # the old lease was released on take-over
    late = cni_bed.cni("DEL", cni_bed.netconf(dev), "old1")
    assert late.rc == 0, late.stdout
    [port] = cni_bed.ports()
    assert port["external_ids"][TAG_CONTAINER_ID] == "new1"
    assert cni_bed.cni("CHECK", cni_bed.netconf(dev, prevResult=new.json), "new1",
                       netns_path=pod_netns.path).rc == 0
    assert cni_bed.cni("DEL", cni_bed.netconf(dev), "new1").rc == 0
    cni_bed.assert_clean()


def test_del_naming_another_device_removes_this_attachment_only(cni_bed, pod_netns):
    mine = cni_bed.slots.device_id("vhostuser-ovs", 7)
    theirs = cni_bed.slots.device_id("vhostuser-ovs", 8)
    cni_bed.allocate("default", "pod-a", mine)
    cni_bed.allocate("default", "pod-b", theirs)
    assert cni_bed.cni("ADD", cni_bed.netconf(mine), "m1", netns_path=pod_netns.path).rc == 0
    assert cni_bed.cni("ADD", cni_bed.netconf(theirs), "t1", netns_path=pod_netns.path,
                       pod=("default", "pod-b")).rc == 0
    wrong = cni_bed.cni("DEL", cni_bed.netconf(theirs), "m1")
    assert wrong.rc == 0, wrong.stdout
    [port] = cni_bed.ports()
    assert port["external_ids"][TAG_CONTAINER_ID] == "t1"
    assert len(cni_bed.leases()) == 1 and len(cni_bed.records()) == 1
    assert cni_bed.cni("DEL", cni_bed.netconf(theirs), "t1", pod=("default", "pod-b")).rc == 0
    cni_bed.assert_clean()


def test_check_reports_a_port_removed_behind_numanets_back_and_replay_restores_it(
        cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 4)
    cni_bed.allocate("default", "pod-a", dev)
    conf = cni_bed.netconf(dev)
    add = cni_bed.cni("ADD", conf, "c4", netns_path=pod_netns.path)
    assert add.rc == 0
    [port] = cni_bed.ports()
    cni_bed.ovs.vsctl("del-port", port["name"])
    check = cni_bed.cni("CHECK", {**conf, "prevResult": add.json}, "c4",
                        netns_path=pod_netns.path)
    assert check.rc == 1
    assert check.json["code"] == errors.CHECK_FAILED
    assert "has no port" in check.json["msg"]
    # What the agent does when a vSwitch comes back: plug every recorded attachment again.
    assert replay(cni_bed.context, "ovs") == 1
    [port] = cni_bed.ports()
    assert port["external_ids"][TAG_CONTAINER_ID] == "c4"
    assert cni_bed.cni("CHECK", {**conf, "prevResult": add.json}, "c4",
                       netns_path=pod_netns.path).rc == 0
    # A wrong MAC in prevResult is reported as well.
    forged = json.loads(add.stdout)
    forged["interfaces"][0]["mac"] = "02:00:00:00:00:99"
    bad = cni_bed.cni("CHECK", {**conf, "prevResult": forged}, "c4", netns_path=pod_netns.path)
    assert bad.rc == 1 and bad.json["code"] == errors.CHECK_FAILED
    assert cni_bed.cni("DEL", conf, "c4").rc == 0
    cni_bed.assert_clean()


def test_check_of_a_container_whose_netns_is_gone(cni_bed):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 5)
    cni_bed.allocate("default", "pod-a", dev)
    with netns("nncni") as ns:
        add = cni_bed.cni("ADD", cni_bed.netconf(dev), "c5", netns_path=ns.path)
        assert add.rc == 0
        path = ns.path
    check = cni_bed.cni("CHECK", cni_bed.netconf(dev, prevResult=add.json), "c5",
                        netns_path=path)
    assert check.rc == 1 and check.json["code"] == errors.UNKNOWN_CONTAINER
    assert cni_bed.cni("DEL", cni_bed.netconf(dev), "c5", netns_path=path).rc == 0
    cni_bed.assert_clean()


def test_gc_removes_only_stale_attachments_of_its_network(cni_bed, pod_netns):
    devs = [cni_bed.slots.device_id("vhostuser-ovs", i) for i in (10, 11, 12, 13)]
    for i, dev in enumerate(devs):
        cni_bed.allocate("default", f"pod-{i}", dev)
    for i, dev in enumerate(devs[:3]):
        add = cni_bed.cni("ADD", cni_bed.netconf(dev), f"gc{i}", netns_path=pod_netns.path,
                          pod=("default", f"pod-{i}"))
        assert add.rc == 0, add.stdout
    other = cni_bed.netconf(devs[3], name="other-net")
    assert cni_bed.cni("ADD", other, "gc3", netns_path=pod_netns.path,
                       pod=("default", "pod-3")).rc == 0
    assert len(cni_bed.ports()) == 4

    gc = cni_bed.netconf(**{"cni.dev/valid-attachments": [{"containerID": "gc0",
                                                            "ifname": "net1"}]})
    done = cni_bed.cni("GC", gc, ifname="", pod=None)
    assert done.rc == 0, done.stdout
    assert done.stdout == ""
    owners = sorted(p["external_ids"][TAG_CONTAINER_ID] for p in cni_bed.ports())
    assert owners == ["gc0", "gc3"]  # gc3 belongs to another network: not this GC's
    assert len(cni_bed.leases()) == 1
    assert len(cni_bed.container_files()) == 2
    assert cni_bed.cni("DEL", cni_bed.netconf(devs[0]), "gc0").rc == 0
    assert cni_bed.cni("DEL", other, "gc3").rc == 0
    cni_bed.assert_clean()


def test_gc_releases_allocations_no_pod_holds(cni_bed):
    held = cni_bed.slots.device_id("vhostuser-ovs", 20)
    freed = cni_bed.slots.device_id("vhostuser-ovs", 21)
    cni_bed.allocate("default", "pod-a", held)
    cni_bed.allocate("default", "pod-b", freed)
    cni_bed.forget_pod("default", "pod-b")  # the kubelet no longer lists pod-b
    gc = cni_bed.netconf(**{"cni.dev/valid-attachments": []})
    assert cni_bed.cni("GC", gc, ifname="", pod=None).rc == 0
    assert set(cni_bed.allocated.all()) == {held}


def test_status(cni_bed):
    ok = cni_bed.cni("STATUS", cni_bed.netconf(), ifname="", pod=None)
    assert ok.rc == 0 and ok.stdout == "", ok.stdout
    old = cni_bed.cni("STATUS", cni_bed.netconf(cniVersion="1.0.0"), ifname="", pod=None)
    assert old.rc == 1 and old.json["code"] == errors.INCOMPATIBLE_VERSION


def test_status_reports_an_unreachable_vswitch(cni_bed):
    from vswitch.ovs.backend import OvsVSwitch

    dead = OvsVSwitch(f"unix:{cni_bed.base}/no-such-db.sock", "x", timeout=0.5)
    cni_bed.context.vswitches = {"ovs": dead}
    status = cni_bed.cni("STATUS", cni_bed.netconf(), ifname="", pod=None)
    assert status.rc == 1
    assert status.json["code"] == errors.PLUGIN_NOT_AVAILABLE
    assert "no-such-db.sock" in status.json["msg"]


def test_socket_is_root_only(cni_bed):
    mode = os.stat(cni_bed.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_teardown_while_the_agent_stops_still_releases_the_address(cni_bed, pod_netns):
    """DEL's IPAM release runs beside the unplug on the agent's pool; once that pool is
    shut (the agent stopping while a replay tears an attachment down) it runs inline."""
    from concurrent.futures import ThreadPoolExecutor

    from cni.records import AttachmentRecord
    from cni.request import parse_request
    from cni.teardown import record_netconf, teardown

    dev = cni_bed.slots.device_id("vhostuser-ovs", 0)
    cni_bed.allocate("default", "pod-a", dev)
    conf = cni_bed.netconf(dev)
    add = cni_bed.cni("ADD", conf, "c0ffee0c", netns_path=pod_netns.path)
    assert add.rc == 0, add.stdout
    assert cni_bed.leases()
    record = cni_bed.context.records.get(dev)
    assert isinstance(record, AttachmentRecord)
    env = cni_bed.env("DEL", "c0ffee0c", "net1", pod_netns.path, ("default", "pod-a"))
    request = parse_request(env, json.dumps(conf).encode())
    pool = cni_bed.context.executor
    shut = ThreadPoolExecutor(max_workers=1)
    shut.shutdown()
    cni_bed.context.executor = shut
    try:
        assert teardown(cni_bed.context, request, record, record_netconf(record)) == []
    finally:
        cni_bed.context.executor = pool
    cni_bed.assert_clean()


def _count_lookups(cni_bed, monkeypatch) -> list[str]:
    """Every port lookup the agent's OVS backend makes (``port`` and the plug's own)."""
    seen: list[str] = []
    lookup, port = cni_bed.switch._plugged, cni_bed.switch.port

    def counted_plugged(conn, device_id, **kwargs):
        seen.append(device_id)
        return lookup(conn, device_id, **kwargs)

    def counted_port(device_id):
        seen.append(f"port({device_id})")
        return port(device_id)

    monkeypatch.setattr(cni_bed.switch, "_plugged", counted_plugged)
    monkeypatch.setattr(cni_bed.switch, "port", counted_port)
    return seen


def test_an_add_looks_its_port_up_once(cni_bed, pod_netns, monkeypatch):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 20)
    cni_bed.allocate("default", "pod-a", dev)
    seen = _count_lookups(cni_bed, monkeypatch)
    add = cni_bed.cni("ADD", cni_bed.netconf(dev), "once1", netns_path=pod_netns.path)
    assert add.rc == 0, add.stdout
    assert seen == [dev]  # the plug's own lookup, nothing before it
    assert cni_bed.cni("DEL", cni_bed.netconf(dev), "once1").rc == 0
    cni_bed.assert_clean()


@pytest.mark.parametrize("owner", ["another-pod", "same-attachment"])
def test_an_add_replaces_a_port_an_earlier_attachment_left_without_a_record(
        cni_bed, pod_netns, owner):
    """A port of the device with no record (an agent that lost its record, a crash
    between the plug and the record): the ADD's plug removes it and makes the port anew
    when it is another attachment's, keeps it when it is this very attachment's."""
    dev = cni_bed.slots.device_id("vhostuser-ovs", 21)
    cni_bed.allocate("default", "pod-a", dev)
    conf = {k: v for k, v in cni_bed.netconf(dev).items() if k != "ipam"}
    first = cni_bed.cni("ADD", conf, "left1", netns_path=pod_netns.path)
    assert first.rc == 0, first.stdout
    [left] = cni_bed.ports()
    cni_bed.context.records.delete(dev)  # the record is lost, the port stays
    container = "left2" if owner == "another-pod" else "left1"
    add = cni_bed.cni("ADD", conf, container, netns_path=pod_netns.path)
    assert add.rc == 0, add.stdout
    [port] = cni_bed.ports()
    assert port["external_ids"][TAG_CONTAINER_ID] == container
    assert (port["_uuid"] == left["_uuid"]) == (owner == "same-attachment")
    assert cni_bed.cni("DEL", conf, container).rc == 0
    cni_bed.assert_clean()
