"""The OVS backend against a real ovsdb-server + ovs-vswitchd-dpdk (private, no hugepages)."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from dataclasses import replace

import pytest
from helpers.ovs import (
    bridge_ports,
    eventually,
    interface,
    make_slot,
    numanet_ports,
    port,
    rows,
    seqpacket_listener,
)

import numa
import vswitch
from vswitch.api import (
    TAG_CONTAINER_ID,
    TAG_DEVICE_ID,
    TAG_IFNAME,
    TAG_OWNER,
    TAG_POD_NAME,
    TAG_POD_NAMESPACE,
    TAG_PREPARED,
    Owner,
    PortSpec,
    VSwitchError,
    VSwitchUnavailable,
)
from vswitch.ovs.backend import OvsVSwitch
from vswitch.ovs.ports import pmd_cpus, port_name

pytestmark = pytest.mark.ovs

OWNER = Owner(pod_namespace="ns1", pod_name="web-0", container_id="c0ffee" * 8, ifname="net1")


def spec(
    bench, device_id: str, kind: str = "vhost-user", role: str = "server", **extra
) -> PortSpec:
    slot = make_slot(bench.slots, device_id)
    fields = dict(
        device_id=device_id,
        kind=kind,
        container_role=role,
        socket_path=str(slot / "sock"),
        network=bench.bridge,
        owner=OWNER,
    )
    fields.update(extra)
    return PortSpec(**fields)


def assert_tags(ids: dict[str, str], device_id: str, owner: Owner = OWNER) -> None:
    assert ids[TAG_OWNER] == "numanet"
    assert ids[TAG_DEVICE_ID] == device_id
    assert ids[TAG_POD_NAMESPACE] == owner.pod_namespace
    assert ids[TAG_POD_NAME] == owner.pod_name
    assert ids[TAG_CONTAINER_ID] == owner.container_id
    assert ids[TAG_IFNAME] == owner.ifname


# -- each kind and role ------------------------------------------------------------------


def test_vhost_container_server_gives_dpdkvhostuserclient(ovs_bench):
    s = spec(ovs_bench, "vu-ovs-n0-001", role="server", mac="02:00:00:00:01:01")
    plugged = ovs_bench.switch.plug(s)

    assert plugged.port_name == port_name("vu-ovs-n0-001")
    assert plugged.network == ovs_bench.bridge
    assert plugged.kind == "vhost-user"
    assert plugged.socket_path == s.socket_path
    assert plugged.owner == OWNER
    assert plugged.mac == "02:00:00:00:01:01"
    iface = interface(ovs_bench.ovs, plugged.port_name)
    assert iface["type"] == "dpdkvhostuserclient"
    assert iface["options"] == {"vhost-server-path": s.socket_path}
    assert iface["ofport"] > 0 and iface["error"] == []
    assert iface["status"]["mode"] == "client"
    assert iface["external_ids"]["attached-mac"] == "02:00:00:00:01:01"
    assert_tags(iface["external_ids"], s.device_id)
    assert_tags(port(ovs_bench.ovs, plugged.port_name)["external_ids"], s.device_id)
    bridge = rows(ovs_bench.ovs, "Bridge", f"name={ovs_bench.bridge}")[0]
    assert bridge["datapath_type"] == "netdev"  # created by the plug, as a userspace bridge
    # OVS connects to the container's socket: it does not create one itself.
    assert not os.path.exists(s.socket_path)


def test_vhost_container_client_links_the_socket_ovs_serves(ovs_bench):
    s = spec(ovs_bench, "vu-ovs-n0-002", role="client")
    plugged = ovs_bench.switch.plug(s)

    iface = interface(ovs_bench.ovs, plugged.port_name)
    assert iface["type"] == "dpdkvhostuser"
    assert iface["status"]["mode"] == "server"
    ovs_socket = ovs_bench.ovs.rundir / plugged.port_name
    assert stat.S_ISSOCK(os.stat(s.socket_path).st_mode)
    assert os.stat(s.socket_path).st_ino == os.stat(ovs_socket).st_ino
    assert not os.stat(s.socket_path).st_mode & stat.S_IWOTH  # never world-writable
    # A container connecting to the slot's socket reaches OVS's vhost-user server.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(s.socket_path)
        eventually(
            lambda: (
                f"{ovs_socket}) new vhost user connection" in ovs_bench.ovs.vswitchd_log.read_text()
            )
        )

    assert ovs_bench.switch.unplug(s.device_id) is True
    assert not os.path.exists(s.socket_path)  # the link goes with the unplug
    # OVS's own socket goes once ovs-vswitchd applied the removal (the unplug does not
    # wait for that; the device's next plug does, and so does settle()).
    assert ovs_bench.switch.settle()
    assert not ovs_socket.exists()


def test_memif_container_slave_ovs_serves_socket(ovs_bench):
    s = spec(ovs_bench, "mf-ovs-n0-001", kind="memif", role="slave", memif_id=7)
    plugged = ovs_bench.switch.plug(s)

    iface = interface(ovs_bench.ovs, plugged.port_name)
    assert iface["type"] == "dpdk"
    devargs = iface["options"]["dpdk-devargs"]
    assert devargs.startswith("net_memif")
    assert "role=server" in devargs and "id=7" in devargs
    assert f"socket={s.socket_path}" in devargs and "socket-abstract=no" in devargs
    assert iface["ofport"] > 0
    assert stat.S_ISSOCK(os.stat(s.socket_path).st_mode)
    assert plugged.kind == "memif"
    # One PMD (pmd-cpu-mask has one CPU): OVS sends on queue 1, so two queue pairs.
    assert bin(int(ovs_bench.ovs.pmd_cpu_mask, 16)).count("1") == 1
    assert plugged.tags["numanet-memif-queues"] == "2"
    assert iface["options"]["n_rxq"] == "2"

    assert ovs_bench.switch.unplug(s.device_id)
    eventually(lambda: not os.path.exists(s.socket_path))


def test_memif_container_master_ovs_connects_as_client(ovs_bench):
    s = spec(ovs_bench, "mf-ovs-n0-002", kind="memif", role="master", ring_size=1024)
    with seqpacket_listener(s.socket_path) as listener:
        plugged = ovs_bench.switch.plug(s)
        listener.settimeout(5)
        conn, _ = listener.accept()  # DPDK's memif client connected to the container
        conn.close()
        devargs = interface(ovs_bench.ovs, plugged.port_name)["options"]["dpdk-devargs"]
        assert "role=client" in devargs and "rsize=10" in devargs
        assert ovs_bench.switch.unplug(s.device_id)


def test_memif_master_without_container_socket_is_refused_before_ovs(ovs_bench):
    s = spec(ovs_bench, "mf-ovs-n0-003", kind="memif", role="master")
    with pytest.raises(VSwitchError, match="needs the container's socket .* role slave"):
        ovs_bench.switch.plug(s)
    assert port(ovs_bench.ovs, port_name(s.device_id)) is None


def test_vlan_and_mtu(ovs_bench):
    s = spec(ovs_bench, "vu-ovs-n0-003", vlan=42, mtu=9000)
    plugged = ovs_bench.switch.plug(s)
    assert port(ovs_bench.ovs, plugged.port_name)["tag"] == 42
    assert interface(ovs_bench.ovs, plugged.port_name)["mtu_request"] == 9000
    assert plugged.tags["numanet-vlan"] == "42"


def test_existing_kernel_bridge_is_refused(ovs_bench):
    # A system-datapath bridge cannot carry DPDK ports; numanet must not convert it.
    # (Waiting for vswitchd to take the bridge in also lets the backend's copy of the
    # database see it: with --no-wait the plug could run before the update reached it.)
    ovs_bench.ovs.vsctl("add-br", ovs_bench.bridge)
    s = spec(ovs_bench, "vu-ovs-n0-004")
    with pytest.raises(VSwitchError, match="datapath_type=system.*netdev"):
        ovs_bench.switch.plug(s)
    assert port(ovs_bench.ovs, port_name(s.device_id)) is None
    assert rows(ovs_bench.ovs, "Bridge", f"name={ovs_bench.bridge}")[0]["datapath_type"] == ""


# -- idempotency and ownership -------------------------------------------------------------


def test_plug_same_spec_twice_returns_the_existing_port(ovs_bench):
    s = spec(ovs_bench, "vu-ovs-n0-005", vlan=7, mac="02:00:00:00:00:05")
    first = ovs_bench.switch.plug(s)
    uuid = port(ovs_bench.ovs, first.port_name)["_uuid"]
    second = ovs_bench.switch.plug(s)
    assert second == first
    assert port(ovs_bench.ovs, first.port_name)["_uuid"] == uuid  # not recreated
    assert bridge_ports(ovs_bench.ovs, ovs_bench.bridge) == [first.port_name]


def test_plug_of_a_kept_memif_port_follows_a_changed_pmd_cpu_mask(ovs_bench):
    # A replay after a pmd-cpu-mask change plugs the port OVS kept: OVS now sends on one
    # queue per PMD thread (+ main thread), so n_rxq and the tag the CNI reads follow.
    ovs = ovs_bench.ovs
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to run two OVS PMD threads")
    s = spec(ovs_bench, "mf-ovs-n0-010", kind="memif", role="slave")
    first = ovs_bench.switch.plug(s)
    assert first.tags["numanet-memif-queues"] == "2"
    uuid = port(ovs, first.port_name)["_uuid"]

    assert ovs_bench.switch.plug(s) == first  # same mask: nothing to change
    two_pmds = hex((1 << cpus[0]) | (1 << cpus[1]))
    ovs.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-cpu-mask={two_pmds}")
    try:
        again = ovs_bench.switch.plug(s)
        assert again.tags["numanet-memif-queues"] == "3"
        assert replace(again, tags={}) == replace(first, tags={})
        iface = interface(ovs, first.port_name)
        assert iface["options"]["n_rxq"] == "3"
        assert iface["external_ids"]["numanet-memif-queues"] == "3"
        assert iface["ofport"] > 0 and not iface["error"]  # vswitchd applied it
        assert port(ovs, first.port_name)["external_ids"]["numanet-memif-queues"] == "3"
        assert port(ovs, first.port_name)["_uuid"] == uuid  # updated, not recreated
        assert ovs_bench.switch.ports() == [again]
    finally:
        ovs.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-cpu-mask={ovs.pmd_cpu_mask}")
    assert ovs_bench.switch.plug(s).tags["numanet-memif-queues"] == "2"
    assert interface(ovs, first.port_name)["options"]["n_rxq"] == "2"


def test_plug_for_another_owner_is_refused(ovs_bench):
    s = spec(ovs_bench, "vu-ovs-n0-006")
    ovs_bench.switch.plug(s)
    thief = Owner(pod_namespace="other", pod_name="evil", container_id="bad", ifname="net1")
    with pytest.raises(VSwitchError, match="already plugged for pod=ns1/web-0"):
        ovs_bench.switch.plug(replace(s, owner=thief))
    ids = port(ovs_bench.ovs, port_name(s.device_id))["external_ids"]
    assert_tags(ids, s.device_id)  # untouched


def test_plug_same_owner_other_settings_is_refused(ovs_bench):
    s = spec(ovs_bench, "vu-ovs-n0-007", vlan=10)
    ovs_bench.switch.plug(s)
    with pytest.raises(VSwitchError, match="other settings.*numanet-vlan: '10' -> '20'"):
        ovs_bench.switch.plug(replace(s, vlan=20))
    assert port(ovs_bench.ovs, port_name(s.device_id))["tag"] == 10


def test_unplug_twice(ovs_bench):
    s = spec(ovs_bench, "vu-ovs-n0-008")
    plugged = ovs_bench.switch.plug(s)
    assert ovs_bench.switch.unplug(s.device_id) is True
    assert ovs_bench.switch.unplug(s.device_id) is False
    assert port(ovs_bench.ovs, plugged.port_name) is None
    assert interface(ovs_bench.ovs, plugged.port_name) is None


def test_port_named_like_ours_but_foreign_is_not_touched(ovs_bench):
    # Someone else's port with the name numanet would derive: refuse, never delete it.
    name = port_name("vu-ovs-n0-009")
    ovs_bench.ovs.vsctl(
        "add-br", ovs_bench.bridge, "--", "set", "bridge", ovs_bench.bridge, "datapath_type=netdev"
    )
    ovs_bench.ovs.vsctl(
        "add-port", ovs_bench.bridge, name, "--", "set", "interface", name, "type=internal"
    )
    with pytest.raises(VSwitchError, match="not numanet's port"):
        ovs_bench.switch.unplug("vu-ovs-n0-009")
    with pytest.raises(VSwitchError, match="not numanet's port"):
        ovs_bench.switch.plug(spec(ovs_bench, "vu-ovs-n0-009"))
    assert ovs_bench.switch.port("vu-ovs-n0-009") is None  # not this device's port
    assert port(ovs_bench.ovs, name) is not None


def test_ports_seen_by_a_new_connection(ovs_bench):
    owners = {}
    for i, (kind, role) in enumerate(
        [("vhost-user", "server"), ("vhost-user", "client"), ("memif", "slave")]
    ):
        owner = Owner(
            pod_namespace="ns2", pod_name=f"pod-{i}", container_id=f"cid{i}", ifname=f"net{i}"
        )
        s = spec(
            ovs_bench,
            f"rc-ovs-n0-{i:03d}",
            kind=kind,
            role=role,
            owner=owner,
            mac=f"02:00:00:00:02:0{i}",
        )
        ovs_bench.switch.plug(s)
        owners[s.device_id] = (owner, kind, s.socket_path)
    # A port numanet does not own on the same bridge is not listed.
    ovs_bench.ovs.vsctl(
        "add-port",
        ovs_bench.bridge,
        "foreign0",
        "--",
        "set",
        "interface",
        "foreign0",
        "type=internal",
    )

    again = OvsVSwitch(ovs_bench.ovs.db, ovs_bench.bridge, timeout=5)
    again.connect()
    try:
        listed = {p.device_id: p for p in again.ports() if p.network == ovs_bench.bridge}
        # The lookup of one device finds what the listing finds.
        assert {d: again.port(d) for d in owners} == {d: listed.get(d) for d in owners}
        assert again.port("rc-ovs-n0-999") is None
    finally:
        again.close()
    assert set(listed) == set(owners)
    for device_id, (owner, kind, socket_path) in owners.items():
        assert listed[device_id].owner == owner
        assert listed[device_id].kind == kind
        assert listed[device_id].socket_path == socket_path
        assert listed[device_id].port_name == port_name(device_id)


# -- validation and rollback ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vlan": 5000}, "VLAN 5000 is not a VLAN ID"),
        ({"mtu": 20}, "MTU 20 is outside"),
        ({"mac": "zz:00:00:00:00:01"}, "MAC 'zz:00:00:00:00:01' is not of the form"),
        ({"mac": "01:00:5e:00:00:01"}, "multicast"),
        ({"container_role": "listener"}, "vhost-user mode 'listener'"),
        ({"kind": "tap"}, "port kind 'tap'"),
        ({"socket_path": "relative/sock"}, "must be absolute"),
        ({"socket_path": "/nonexistent-numanet/s/x/sock"}, "slot directory .* does not exist"),
        ({"device_id": "../../etc"}, "is not usable"),
        ({"device_id": "bad-ovs-n0-001\n"}, "is not usable"),
        ({"mac": "02:00:00:00:00:01\n"}, "is not of the form"),
        ({"network": "br0\n"}, "bridge name"),
        ({"kind": "memif", "container_role": "slave", "memif_mode": "ip"}, "ethernet only"),
        ({"kind": "memif", "container_role": "slave", "ring_size": 1000}, "power of two"),
        ({"network": "a-bridge-name-too-long"}, "bridge name"),
        ({"kind": "memif", "container_role": "slave", "ip_address": "10.0.0.1/24"}, "VPP pool"),
    ],
)
def test_bad_spec_is_refused_before_touching_ovs(ovs_bench, changes, message):
    s = spec(ovs_bench, "bad-ovs-n0-001")
    with pytest.raises(VSwitchError, match=message):
        ovs_bench.switch.plug(replace(s, **changes))
    assert not [
        p
        for p in numanet_ports(ovs_bench.ovs)
        if p["external_ids"][TAG_DEVICE_ID] in ("bad-ovs-n0-001", "../../etc")
    ]


def test_memif_socket_path_cannot_inject_devargs(ovs_bench):
    slot = make_slot(ovs_bench.slots, "inj-ovs-n0-001,role=client")
    s = PortSpec(
        device_id="inj-ovs-n0-001",
        kind="memif",
        container_role="slave",
        socket_path=str(slot / "sock"),
        network=ovs_bench.bridge,
        owner=OWNER,
    )
    with pytest.raises(VSwitchError, match="devargs cannot carry"):
        ovs_bench.switch.plug(s)


def test_port_ovs_refuses_is_rolled_back(ovs_bench):
    # The container's memif socket is a stream socket: DPDK's memif client (seqpacket)
    # cannot connect, OVS reports it in Interface.error after the commit succeeded.
    s = spec(ovs_bench, "rb-ovs-n0-001", kind="memif", role="master")
    wrong = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    wrong.bind(s.socket_path)
    wrong.listen(1)
    try:
        with pytest.raises(
            VSwitchError, match=f"could not create port {port_name(s.device_id)}.*removed again"
        ):
            ovs_bench.switch.plug(s)
    finally:
        wrong.close()
    assert port(ovs_bench.ovs, port_name(s.device_id)) is None
    assert interface(ovs_bench.ovs, port_name(s.device_id)) is None
    assert [p.device_id for p in ovs_bench.switch.ports() if p.network == ovs_bench.bridge] == []
    # The slot is usable again: the same device plugs once the container side is right.
    os.unlink(s.socket_path)
    with seqpacket_listener(s.socket_path):
        assert ovs_bench.switch.plug(s).device_id == s.device_id


# -- ports prepared ahead of their pod ------------------------------------------------------


def test_prepared_vhost_port_is_claimed_in_place(ovs_bench):
    s = spec(ovs_bench, "pp-ovs-n0-001", mac="02:00:00:00:01:01")
    unowned = replace(s, owner=Owner(), mac=None)
    prepared = ovs_bench.switch.prepare(unowned)
    assert prepared is not None and prepared.prepared and prepared.owner == Owner()
    row = port(ovs_bench.ovs, prepared.port_name)
    iface = interface(ovs_bench.ovs, prepared.port_name)
    assert row["external_ids"][TAG_PREPARED] == "true" and iface["ofport"] > 0
    # Preparing again keeps the port.
    assert ovs_bench.switch.prepare(unowned) == prepared
    assert port(ovs_bench.ovs, prepared.port_name)["_uuid"] == row["_uuid"]

    claimed = ovs_bench.switch.plug(s)
    assert not claimed.prepared and claimed.owner == OWNER
    after = port(ovs_bench.ovs, claimed.port_name)
    assert after["_uuid"] == row["_uuid"]  # claimed, not made anew
    assert TAG_PREPARED not in after["external_ids"]
    assert_tags(after["external_ids"], s.device_id)
    iface_after = interface(ovs_bench.ovs, claimed.port_name)
    assert iface_after["_uuid"] == iface["_uuid"] and iface_after["ofport"] == iface["ofport"]
    assert iface_after["external_ids"]["attached-mac"] == "02:00:00:00:01:01"
    assert_tags(iface_after["external_ids"], s.device_id)
    # The claimed port is an ordinary one now: same spec again is a no-op, another owner
    # is refused, and preparing does not touch it.
    assert ovs_bench.switch.plug(s) == claimed
    with pytest.raises(VSwitchError, match="already plugged"):
        ovs_bench.switch.plug(replace(s, owner=replace(OWNER, pod_name="other")))
    assert ovs_bench.switch.prepare(unowned).owner == OWNER
    assert ovs_bench.switch.unplug(s.device_id)


def test_prepared_memif_port_is_claimed_with_its_queues(ovs_bench):
    s = spec(ovs_bench, "pp-ovs-n0-002", kind="memif", role="slave")
    prepared = ovs_bench.switch.prepare(replace(s, owner=Owner()))
    assert prepared is not None and prepared.tags["numanet-memif-queues"] == "2"
    assert stat.S_ISSOCK(os.stat(s.socket_path).st_mode)  # OVS serves it already
    uuid = port(ovs_bench.ovs, prepared.port_name)["_uuid"]
    claimed = ovs_bench.switch.plug(s)
    assert claimed.tags["numanet-memif-queues"] == "2" and claimed.owner == OWNER
    assert port(ovs_bench.ovs, claimed.port_name)["_uuid"] == uuid
    assert interface(ovs_bench.ovs, claimed.port_name)["external_ids"][
        "numanet-memif-queues"] == "2"
    assert ovs_bench.switch.unplug(s.device_id)
    eventually(lambda: not os.path.exists(s.socket_path))


@pytest.mark.parametrize(("prepared_with", "wanted"), [
    ({}, {"vlan": 30, "mtu": 1400}),
    ({"vlan": 30, "mtu": 1400}, {}),
    ({"vlan": 30}, {"vlan": 31}),
])
def test_prepared_port_takes_another_vlan_and_mtu_in_place(ovs_bench, prepared_with, wanted):
    device_id = f"pv-ovs-n0-{len(prepared_with)}{len(wanted)}"
    prepared = ovs_bench.switch.prepare(spec(ovs_bench, device_id, owner=Owner(),
                                             **prepared_with))
    before = port(ovs_bench.ovs, prepared.port_name)
    assert before["tag"] == prepared_with.get("vlan", [])
    plugged = ovs_bench.switch.plug(spec(ovs_bench, device_id, **wanted))
    row = port(ovs_bench.ovs, plugged.port_name)
    iface = interface(ovs_bench.ovs, plugged.port_name)
    assert row["_uuid"] == before["_uuid"] and iface["ofport"] > 0  # the same port
    assert row["tag"] == wanted.get("vlan", [])
    assert iface["mtu_request"] == wanted.get("mtu", [])
    ids = row["external_ids"]
    assert TAG_PREPARED not in ids and ids.get("numanet-vlan") == (
        str(wanted["vlan"]) if "vlan" in wanted else None)
    assert_tags(ids, device_id)
    assert ovs_bench.switch.unplug(device_id)


@pytest.mark.parametrize("changes", [{"role": "client"}, {"network": "nnother"}])
def test_prepared_port_of_another_kind_or_bridge_is_made_anew(ovs_bench, changes):
    device_id = f"pa-ovs-n0-{sorted(changes)[0]}"
    prepared = ovs_bench.switch.prepare(spec(ovs_bench, device_id, owner=Owner()))
    uuid = port(ovs_bench.ovs, prepared.port_name)["_uuid"]
    wanted = spec(ovs_bench, device_id, **changes)
    try:
        plugged = ovs_bench.switch.plug(wanted)
        row = port(ovs_bench.ovs, plugged.port_name)
        assert row["_uuid"] != uuid and TAG_PREPARED not in row["external_ids"]
        assert_tags(row["external_ids"], device_id)
        if "role" in changes:
            assert interface(ovs_bench.ovs, plugged.port_name)["type"] == "dpdkvhostuser"
            assert stat.S_ISSOCK(os.stat(wanted.socket_path).st_mode)
        assert bridge_ports(ovs_bench.ovs, wanted.network) == [plugged.port_name]
        assert ovs_bench.switch.unplug(device_id)
    finally:
        if "network" in changes:
            ovs_bench.ovs.vsctl("--if-exists", "del-br", changes["network"])


def test_prepare_refuses_an_owner(ovs_bench):
    s = spec(ovs_bench, "pp-ovs-n0-003")
    with pytest.raises(VSwitchError, match="no owner yet"):
        ovs_bench.switch.prepare(s)
    assert port(ovs_bench.ovs, port_name(s.device_id)) is None


def test_unplug_removes_a_prepared_port(ovs_bench):
    s = spec(ovs_bench, "pp-ovs-n0-004", owner=Owner())
    prepared = ovs_bench.switch.prepare(s)
    assert [p.device_id for p in ovs_bench.switch.ports() if p.prepared] == [s.device_id]
    assert ovs_bench.switch.unplug(s.device_id)
    assert port(ovs_bench.ovs, prepared.port_name) is None


# -- concurrency ---------------------------------------------------------------------------


def test_sixteen_parallel_plugs_and_unplugs(ovs_bench):
    specs = [
        spec(ovs_bench, f"par-ovs-n0-{i:03d}", role="server" if i % 2 else "client")
        for i in range(16)
    ]
    barrier = threading.Barrier(len(specs))
    results: dict[str, object] = {}

    def plug(s: PortSpec) -> None:
        barrier.wait()
        try:
            results[s.device_id] = ovs_bench.switch.plug(s)
        except Exception as exc:  # collected and asserted below
            results[s.device_id] = exc

    threads = [threading.Thread(target=plug, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    failures = {k: v for k, v in results.items() if isinstance(v, Exception)}
    assert not failures
    assert len(results) == 16
    assert bridge_ports(ovs_bench.ovs, ovs_bench.bridge) == sorted(
        port_name(s.device_id) for s in specs
    )
    for s in specs:
        assert interface(ovs_bench.ovs, port_name(s.device_id))["ofport"] > 0

    unplugged: list[bool] = []
    threads = [
        threading.Thread(target=lambda d=s.device_id: unplugged.append(ovs_bench.switch.unplug(d)))
        for s in specs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert unplugged == [True] * 16
    assert bridge_ports(ovs_bench.ovs, ovs_bench.bridge) == []
    assert not any(os.path.exists(s.socket_path) for s in specs)


# -- health, unavailability ------------------------------------------------------------------


def _after_connecting(seen: list[bool]) -> list[bool]:
    """What a liveness listener heard after the watch's first connection (the listener may
    be added before or after it, so a leading True may or may not be there)."""
    return seen[1:] if seen[:1] == [True] else seen


def test_health_follows_vswitchd(fresh_bench):
    switch, ovs = fresh_bench.switch, fresh_bench.ovs
    assert switch.health().healthy
    seen: list[bool] = []
    switch.on_liveness(seen.append)
    # The watch connects in its own thread (and may tell the listener so, True); from then
    # on a death is known at once, one before that is left to the probes.
    eventually(lambda: switch.vswitchd_alive is True)

    ovs.stop_vswitchd()
    # Its control socket closed: known at once, no probe waited out.
    eventually(lambda: _after_connecting(seen) == [False])
    health = switch.health()
    assert not health.healthy
    # The database still says DPDK is initialised.
    assert ovs.vsctl("get", "Open_vSwitch", ".", "dpdk_initialized", wait=False) == "true"
    assert "ovs-vswitchd is not running" in health.reason and "control socket" in health.reason

    # A plug while vswitchd is down fails as "unavailable" and leaves nothing behind.
    s = spec(fresh_bench, "hl-ovs-n0-001")
    with pytest.raises(VSwitchUnavailable, match="ovs-vswitchd is not running"):
        switch.plug(s)
    assert port(ovs, port_name(s.device_id)) is None

    ovs.start_vswitchd()
    eventually(lambda: _after_connecting(seen) == [False, True])
    assert switch.health().healthy
    assert switch.plug(s).device_id == s.device_id


def test_unplug_on_a_dead_vswitchd_removes_the_port_from_the_database(fresh_bench):
    """The port is gone from the rows a restarted vswitchd reads, and the dead one holds no
    socket: the unplug is done, and a plug of the device after the restart makes it anew."""
    switch, ovs = fresh_bench.switch, fresh_bench.ovs
    s = spec(fresh_bench, "du-ovs-n0-001")
    switch.plug(s)
    seen: list[bool] = []
    switch.on_liveness(seen.append)
    eventually(lambda: switch.vswitchd_alive is True)
    ovs.stop_vswitchd()
    eventually(lambda: _after_connecting(seen) == [False])
    assert switch.unplug(s.device_id) is True
    assert port(ovs, port_name(s.device_id)) is None
    assert switch.unplug(s.device_id) is False
    ovs.start_vswitchd()
    eventually(lambda: switch.health().healthy)
    assert switch.plug(s).device_id == s.device_id
    assert port(ovs, port_name(s.device_id)) is not None


def test_a_vswitchd_that_stops_answering_is_found_by_the_probe(fresh_bench):
    """Alive but not applying anything (stopped, wedged): its control socket stays
    connected, so the cur_cfg probe is what notices."""
    import signal

    switch, ovs = fresh_bench.switch, fresh_bench.ovs
    assert switch.health().healthy
    pid = ovs.vswitchd_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        health = switch.health()
        assert not health.healthy and "ovs-vswitchd did not answer" in health.reason
    finally:
        os.kill(pid, signal.SIGCONT)
    eventually(lambda: switch.health().healthy)


def test_health_asks_vswitchd_on_its_control_socket_not_through_the_database(ovs_bench):
    """A probe of a healthy vswitchd writes nothing: no next_cfg bump, so vswitchd does
    not reconfigure every bridge at every round of the agent's monitor."""
    ovs, switch = ovs_bench.ovs, ovs_bench.switch
    eventually(lambda: switch._watch is not None and switch._watch.alive)
    before = ovs.vsctl("get", "Open_vSwitch", ".", "next_cfg", wait=False)
    for _ in range(3):
        assert switch.health().healthy
    assert ovs.vsctl("get", "Open_vSwitch", ".", "next_cfg", wait=False) == before


def test_without_its_control_socket_health_falls_back_to_the_cur_cfg_probe(fresh_bench,
                                                                          tmp_path):
    ovs = fresh_bench.ovs
    switch = OvsVSwitch(ovs.db, fresh_bench.bridge, timeout=1.0,
                        vswitchd_ctl=str(tmp_path / "no-such.ctl"))
    switch.connect()
    try:
        before = int(ovs.vsctl("get", "Open_vSwitch", ".", "next_cfg", wait=False))
        assert switch.health().healthy
        assert int(ovs.vsctl("get", "Open_vSwitch", ".", "next_cfg", wait=False)) > before
        assert switch.vswitchd_down() is None  # unknown, not down
        ovs.stop_vswitchd()
        health = switch.health()
        assert not health.healthy and "ovs-vswitchd did not answer within" in health.reason
    finally:
        switch.close()


def test_database_gone(fresh_bench):
    switch, ovs = fresh_bench.switch, fresh_bench.ovs
    s = spec(fresh_bench, "db-ovs-n0-001")
    ovs.stop_ovsdb()
    start = time.monotonic()
    with pytest.raises(VSwitchUnavailable, match=ovs.db_socket):
        switch.plug(s)
    assert time.monotonic() - start < 5
    assert not switch.health().healthy
    with pytest.raises(VSwitchUnavailable):
        switch.ports()
    assert switch.poll_numa_nodes(numa.discover("/sys", nics=False)) is None


def test_database_back_after_a_restart(fresh_bench):
    # ovsdb-server restarts on the same database: the long-lived connection comes back by
    # itself, the ports it holds are still there, and plugs work again.
    switch, ovs = fresh_bench.switch, fresh_bench.ovs
    kept = spec(fresh_bench, "rs-ovs-n0-001")
    switch.plug(kept)
    ovs.stop_ovsdb()
    with pytest.raises(VSwitchUnavailable):
        switch.plug(spec(fresh_bench, "rs-ovs-n0-002"))
    ovs.start_ovsdb()
    eventually(lambda: switch.health().healthy, timeout=15)
    assert [p.device_id for p in switch.ports()] == [kept.device_id]
    assert switch.plug(spec(fresh_bench, "rs-ovs-n0-002")).device_id == "rs-ovs-n0-002"
    assert port(ovs, port_name("rs-ovs-n0-002"))["tag"] == []


def test_connect_without_database_names_the_socket(tmp_path):
    missing = f"unix:{tmp_path}/db.sock"
    switch = OvsVSwitch(missing, timeout=1)
    with pytest.raises(VSwitchUnavailable, match=f"{tmp_path}/db.sock.*Start Open vSwitch"):
        switch.connect()
    assert not switch.health().healthy


# -- NUMA placement --------------------------------------------------------------------------


def _set_mask(ovs, mask: str | None) -> None:
    if mask is None:
        ovs.vsctl("remove", "Open_vSwitch", ".", "other_config", "pmd-cpu-mask", wait=False)
    else:
        ovs.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-cpu-mask={mask}", wait=False)


def test_poll_numa_nodes_from_pmd_cpu_mask(fresh_bench, tmp_path):
    from helpers.sysfs import two_nodes  # node 0: CPUs 0-3,8-11; node 1: CPUs 4-7,12-15

    sysfs = numa.discover(two_nodes(tmp_path / "sys").root)
    switch, ovs = fresh_bench.switch, fresh_bench.ovs
    for mask, expected in [("0x10", {1}), ("0x11", {0, 1}), ("0x300", {0}), ("0x10000", set())]:
        _set_mask(ovs, mask)
        eventually(lambda e=expected: switch.poll_numa_nodes(sysfs) == frozenset(e))
    _set_mask(ovs, None)  # OVS then places one PMD on each node with ports
    eventually(lambda: switch.poll_numa_nodes(sysfs) == frozenset({0, 1}))
    _set_mask(ovs, "zz")
    eventually(lambda: switch.poll_numa_nodes(sysfs) is None)


def test_poll_numa_nodes_on_this_machine(ovs_bench):
    mask = ovs_bench.ovs.pmd_cpu_mask
    here = numa.discover("/sys")
    expected = numa.cpus_to_nodes(numa.parse_cpumask(mask), here)
    assert ovs_bench.switch.poll_numa_nodes(here) == expected
    assert expected  # the private instance's PMD core exists here


# -- factory -------------------------------------------------------------------------------


def test_factory_builds_an_unconnected_ovs_backend(ovs_bench):
    backend = vswitch.create("ovs", db=ovs_bench.ovs.db, bridge=ovs_bench.bridge)
    assert isinstance(backend, OvsVSwitch) and backend.name == "ovs"
    try:
        assert backend.health().healthy  # connects on first use
    finally:
        backend.close()


def test_factory_refuses_unknown_kind_and_keys():
    with pytest.raises(ValueError, match="unknown vSwitch kind 'linuxbridge'"):
        vswitch.create("linuxbridge")
    with pytest.raises(ValueError, match="does not take apiSocket"):
        vswitch.create("ovs", apiSocket="/run/vpp/api.sock")


def test_port_names_are_short_and_stable():
    names = {port_name(f"vhostuser-ovs-n{n}-{i:03d}") for n in range(2) for i in range(500)}
    assert len(names) == 1000
    assert all(len(n) == 15 and n.startswith("nn") and n.isalnum() for n in names)
    assert port_name("vhostuser-ovs-n0-001") == port_name("vhostuser-ovs-n0-001")


@pytest.mark.parametrize(("mask", "cpus"), [("0x6", {1, 2}), ("6", {1, 2}), ("0", set()),
                                            (" 0x100000000 ", {32})])
def test_pmd_cpu_mask_as_ovs_reads_it(mask, cpus):
    assert pmd_cpus(mask) == frozenset(cpus)


@pytest.mark.parametrize("mask", ["zz", "", "0x", "-0x1", "ff,ff"])
def test_pmd_cpu_mask_that_is_not_one(mask):
    with pytest.raises(ValueError, match="pmd-cpu-mask"):
        pmd_cpus(mask)
