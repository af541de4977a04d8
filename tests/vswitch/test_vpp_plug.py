"""Plug, unplug and list memif and vhost-user slots on VPP (the stand-in VPP, real vpp_papi)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from deviceplugin import naming
from tests.vswitch.vpp_fake import FakeVpp, _SocketFile
from tests.vswitch.vpp_fixtures import is_socket
from tests.vswitch.vpp_timing import FAST
from vswitch.api import TAG_DEVICE_ID, TAG_OWNER, TAG_POD_NAME, Owner, VSwitchError
from vswitch.vpp import VppVSwitch
from vswitch.vpp.tags import is_slot_id

pytest_plugins = ["tests.vswitch.vpp_fixtures"]  # fake_vpp, vpp_dir, vpp_spec, vpp_switch
pytestmark = pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")

MASTER, SLAVE = 0, 1
ETHERNET, IP = 0, 1
CHANGES = {
    "memif_socket_filename_add_del_v2",
    "memif_create_v2",
    "memif_delete",
    "create_vhost_user_if_v2",
    "delete_vhost_user_if",
    "sw_interface_tag_add_del",
    "sw_interface_set_flags",
    "sw_interface_set_mtu",
    "sw_interface_set_l2_bridge",
    "sw_interface_add_del_address",
    "bridge_domain_add_del_v2",
}


def changes(fake: FakeVpp) -> list[tuple[str, dict[str, object]]]:
    """The state-changing requests VPP received, in order, with their decoded arguments."""
    return [(c.name, c.args) for c in fake.calls if c.name in CHANGES]


@pytest.mark.parametrize(
    ("container_role", "vpp_role"), [("slave", MASTER), ("master", SLAVE)], ids=["slave", "master"]
)
def test_memif_ethernet_joins_the_networks_bridge_domain(
    vpp_switch, fake_vpp, vpp_spec, container_role, vpp_role
):
    spec = vpp_spec("memif-vpp-n0-000", container_role=container_role, memif_id=7)

    port = vpp_switch.plug(spec)

    sw = fake_vpp.calls_named("memif_create_v2")[0]
    assert sw.args["role"] == vpp_role and sw.args["mode"] == ETHERNET
    iface = next(i for i in fake_vpp.state.ifaces.values() if i.tag == spec.device_id)
    assert changes(fake_vpp) == [
        (
            "bridge_domain_add_del_v2",
            {
                "bd_id": 1000,
                "flood": True,
                "uu_flood": True,
                "forward": True,
                "learn": True,
                "arp_term": False,
                "arp_ufwd": False,
                "mac_age": 0,
                "bd_tag": "numanet:net-a",
                "is_add": True,
            },
        ),
        (
            "memif_socket_filename_add_del_v2",
            {"is_add": True, "socket_id": 1000, "socket_filename": spec.socket_path},
        ),
        ("memif_create_v2", sw.args),
        (
            "sw_interface_tag_add_del",
            {"is_add": True, "sw_if_index": iface.sw_if_index, "tag": spec.device_id},
        ),
        (
            "sw_interface_set_l2_bridge",
            {
                "rx_sw_if_index": iface.sw_if_index,
                "bd_id": 1000,
                "port_type": 0,
                "shg": 0,
                "enable": True,
            },
        ),
        ("sw_interface_set_flags", {"sw_if_index": iface.sw_if_index, "flags": 1}),
    ]
    assert sw.args["id"] == 7 and sw.args["socket_id"] == 1000
    assert sw.args["ring_size"] == 0 and sw.args["buffer_size"] == 0  # VPP's defaults
    assert iface.admin_up and fake_vpp.state.bds[1000].members == {iface.sw_if_index: 0}
    assert port.port_name == "memif1000/7" and port.kind == "memif"
    assert port.network == "net-a" and port.socket_path == spec.socket_path
    assert port.owner == spec.owner
    assert port.tags[TAG_OWNER] == "numanet" and port.tags[TAG_DEVICE_ID] == spec.device_id
    # VPP creates the socket only when it is the master.
    assert is_socket(spec.socket_path) == (vpp_role == MASTER)


@pytest.mark.parametrize(
    ("container_role", "vpp_role"), [("slave", MASTER), ("master", SLAVE)], ids=["slave", "master"]
)
def test_memif_ip_mode_gets_an_address_and_no_bridge(
    vpp_switch, fake_vpp, vpp_spec, container_role, vpp_role
):
    spec = vpp_spec(
        "memif-ip-n1-003",
        container_role=container_role,
        memif_mode="ip",
        ip_address="10.56.0.1/24",
    )

    port = vpp_switch.plug(spec)

    create = fake_vpp.calls_named("memif_create_v2")[0].args
    assert create["role"] == vpp_role and create["mode"] == IP
    names = [name for name, _ in changes(fake_vpp)]
    assert "bridge_domain_add_del_v2" not in names and "sw_interface_set_l2_bridge" not in names
    address = fake_vpp.calls_named("sw_interface_add_del_address")[0].args
    assert str(address["prefix"]) == "10.56.0.1/24" and address["is_add"] is True
    assert names[-1] == "sw_interface_set_flags"
    assert fake_vpp.state.bds == {}
    assert port.kind == "memif" and port.tags.get("vpp-bd-id") is None


def test_memif_takes_ring_buffer_mac_and_mtu_from_the_spec(vpp_switch, fake_vpp, vpp_spec):
    spec = vpp_spec(
        "memif-vpp-n0-001", ring_size=2048, buffer_size=4096, mac="02:00:00:aa:bb:01", mtu=9000
    )

    port = vpp_switch.plug(spec)

    create = fake_vpp.calls_named("memif_create_v2")[0].args
    assert create["ring_size"] == 2048 and create["buffer_size"] == 4096
    assert str(create["hw_addr"]) == "02:00:00:aa:bb:01"
    assert fake_vpp.calls_named("sw_interface_set_mtu")[0].args["mtu"] == [9000] * 4
    assert port.mac == "02:00:00:aa:bb:01"
    memif = next(iter(fake_vpp.state.memifs.values()))
    assert (memif.ring_size, memif.buffer_size) == (2048, 4096)


@pytest.mark.parametrize(
    ("container_role", "vpp_server"),
    [("client", True), ("server", False)],
    ids=["client", "server"],
)
def test_vhost_user_is_tagged_bridged_and_up(
    vpp_switch, fake_vpp, vpp_spec, container_role, vpp_server
):
    spec = vpp_spec("vhost-vpp-n0-002", kind="vhost-user", container_role=container_role)

    port = vpp_switch.plug(spec)

    create = fake_vpp.calls_named("create_vhost_user_if_v2")[0].args
    assert create["is_server"] is vpp_server
    assert create["sock_filename"] == spec.socket_path and create["tag"] == spec.device_id
    assert create["use_custom_mac"] is False
    iface = next(i for i in fake_vpp.state.ifaces.values() if i.tag == spec.device_id)
    assert iface.admin_up and iface.sw_if_index in fake_vpp.state.bds[1000].members
    assert [n for n, _ in changes(fake_vpp)][-1] == "sw_interface_set_flags"
    assert port.kind == "vhost-user" and port.port_name.startswith("VirtualEthernet0/0/")
    assert is_socket(spec.socket_path) is vpp_server


def test_bridge_domain_is_created_once_per_network_and_removed_with_its_last_port(
    vpp_switch, fake_vpp, vpp_spec
):
    a = vpp_spec("memif-vpp-n0-010", network="red")
    b = vpp_spec("vhost-vpp-n0-011", kind="vhost-user", container_role="client", network="red")
    c = vpp_spec("memif-vpp-n0-012", network="blue")

    ports = [vpp_switch.plug(s) for s in (a, b, c)]

    creates = [c.args for c in fake_vpp.calls_named("bridge_domain_add_del_v2")]
    assert [(c["bd_id"], c["bd_tag"]) for c in creates] == [
        (1000, "numanet:red"),
        (1001, "numanet:blue"),
    ]
    assert [p.tags["vpp-bd-id"] for p in ports] == ["1000", "1000", "1001"]
    assert len(fake_vpp.state.bds[1000].members) == 2

    assert vpp_switch.unplug(a.device_id)
    assert 1000 in fake_vpp.state.bds  # b is still in it
    assert vpp_switch.unplug(b.device_id)
    assert vpp_switch.unplug(c.device_id)
    assert fake_vpp.state.bds == {}


def test_bridge_domain_ids_skip_the_ones_vpp_already_has(vpp_switch, fake_vpp, vpp_spec):
    vpp_switch._conn.call("bridge_domain_add_del_v2", bd_id=1000, bd_tag="operator", is_add=True)

    port = vpp_switch.plug(vpp_spec("memif-vpp-n0-013"))

    assert port.tags["vpp-bd-id"] == "1001"
    assert fake_vpp.state.bds[1000].tag == "operator"


def test_memif_socket_ids_are_allocated_released_and_never_shared(vpp_switch, fake_vpp, vpp_spec):
    fake_vpp.state.sockets[1001] = _SocketFile("/run/other-tool/memif.sock")  # not ours
    specs = [vpp_spec(f"memif-vpp-n0-{i:03d}") for i in range(3)]

    ports = [vpp_switch.plug(s) for s in specs]

    assert [p.tags["vpp-memif-socket-id"] for p in ports] == ["1000", "1002", "1003"]
    assert vpp_switch.unplug(specs[1].device_id)
    deleted = fake_vpp.calls_named("memif_socket_filename_add_del_v2")[-1].args
    assert deleted == {"is_add": False, "socket_id": 1002, "socket_filename": ""}
    assert 1002 not in fake_vpp.state.sockets

    again = vpp_switch.plug(vpp_spec("memif-vpp-n0-009"))

    assert again.tags["vpp-memif-socket-id"] == "1002"  # free again, and only that one
    assert fake_vpp.state.sockets[1001].filename == "/run/other-tool/memif.sock"


def test_unplug_removes_the_socket_file_vpp_leaves_behind(vpp_switch, fake_vpp, vpp_spec):
    spec = vpp_spec("memif-vpp-n0-020", container_role="slave")
    vpp_switch.plug(spec)
    assert is_socket(spec.socket_path)

    assert vpp_switch.unplug(spec.device_id) is True

    # The stand-in, like VPP, closed the memif listener and left its file; unplug removed it.
    assert not os.path.lexists(spec.socket_path)
    assert set(fake_vpp.state.sockets) == {0} and fake_vpp.state.memifs == {}
    assert [i.name for i in fake_vpp.state.ifaces.values()] == ["local0"]


def test_unplug_leaves_the_containers_own_socket_alone(vpp_switch, fake_vpp, vpp_spec):
    spec = vpp_spec("memif-vpp-n0-021", container_role="master")
    container_listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    container_listener.bind(spec.socket_path)
    try:
        vpp_switch.plug(spec)
        assert vpp_switch.unplug(spec.device_id)
        assert is_socket(spec.socket_path)
    finally:
        container_listener.close()


def test_unplug_never_removes_a_file_that_is_not_a_socket(vpp_switch, fake_vpp, vpp_spec):
    spec = vpp_spec("memif-vpp-n0-022", container_role="slave")
    vpp_switch.plug(spec)
    os.unlink(spec.socket_path)
    Path(spec.socket_path).write_text("not a socket")

    assert vpp_switch.unplug(spec.device_id)

    assert Path(spec.socket_path).read_text() == "not a socket"


def test_unplug_is_idempotent(vpp_switch, fake_vpp, vpp_spec):
    spec = vpp_spec("vhost-vpp-n0-023", kind="vhost-user", container_role="client")
    vpp_switch.plug(spec)

    assert vpp_switch.unplug(spec.device_id) is True
    fake_vpp.clear_calls()
    assert vpp_switch.unplug(spec.device_id) is False
    assert vpp_switch.unplug("never-n0-000") is False
    assert changes(fake_vpp) == []


def test_plug_twice_adopts_the_existing_port(vpp_switch, fake_vpp, vpp_spec):
    spec = vpp_spec("memif-vpp-n0-030")
    first = vpp_switch.plug(spec)
    fake_vpp.clear_calls()

    second = vpp_switch.plug(spec)

    assert changes(fake_vpp) == []
    assert second == first


def test_plug_refuses_a_different_port_for_a_plugged_slot(vpp_switch, fake_vpp, vpp_spec):
    vpp_switch.plug(vpp_spec("memif-vpp-n0-031", container_role="slave"))
    fake_vpp.clear_calls()

    with pytest.raises(VSwitchError, match=r"memif-vpp-n0-031 is already plugged.*unplug it first"):
        vpp_switch.plug(vpp_spec("memif-vpp-n0-031", container_role="master"))
    with pytest.raises(VSwitchError, match="network red, not blue|not vhost-user"):
        vpp_switch.plug(vpp_spec("memif-vpp-n0-031", kind="vhost-user", container_role="client"))
    assert changes(fake_vpp) == []


def test_plug_finishes_a_port_left_half_done(vpp_switch, fake_vpp, vpp_spec):
    """A crash between create and bridge leaves a tagged, down, unbridged memif."""
    spec = vpp_spec("memif-vpp-n0-032")
    conn = vpp_switch._conn
    conn.call(
        "memif_socket_filename_add_del_v2",
        is_add=True,
        socket_id=1500,
        socket_filename=spec.socket_path,
    )
    sw = conn.call("memif_create_v2", role=MASTER, mode=ETHERNET, id=0, socket_id=1500).sw_if_index
    conn.call("sw_interface_tag_add_del", is_add=True, sw_if_index=sw, tag=spec.device_id)

    port = vpp_switch.plug(spec)

    iface = fake_vpp.state.ifaces[sw]
    assert iface.admin_up and sw in fake_vpp.state.bds[1000].members
    assert port.port_name == iface.name and len(fake_vpp.state.memifs) == 1


def test_ports_lists_what_vpp_holds_and_only_numanets(vpp_switch, fake_vpp, vpp_spec):
    memif = vpp_spec("memif-vpp-n0-040", memif_id=3)
    vhost = vpp_spec("vhost-vpp-n1-041", kind="vhost-user", container_role="server", network="blue")
    vpp_switch.plug(memif)
    vpp_switch.plug(vhost)
    # Interfaces someone else made: an untagged memif and a vhost-user with a foreign tag.
    conn = vpp_switch._conn
    conn.call(
        "memif_socket_filename_add_del_v2",
        is_add=True,
        socket_id=7,
        socket_filename=memif.socket_path + "x",
    )
    conn.call("memif_create_v2", role=MASTER, mode=ETHERNET, id=0, socket_id=7)
    conn.call(
        "create_vhost_user_if_v2", is_server=False, sock_filename="/tmp/nn-other.sock", tag="uplink"
    )

    ports = {p.device_id: p for p in vpp_switch.ports()}

    assert set(ports) == {memif.device_id, vhost.device_id}
    assert ports[memif.device_id].socket_path == memif.socket_path
    assert ports[memif.device_id].network == "net-a" and ports[vhost.device_id].network == "blue"
    assert ports[vhost.device_id].kind == "vhost-user"
    assert ports[vhost.device_id].tags[TAG_POD_NAME] == "pod-vhost-vpp-n1-041"


def test_a_restarted_agent_sees_its_ports_and_adopts_them(fake_vpp, vpp_switch, vpp_spec):
    spec = vpp_spec("memif-vpp-n0-050", network="red")
    vpp_switch.plug(spec)
    vpp_switch.close()  # the agent goes away; VPP keeps the port

    again = VppVSwitch(fake_vpp.api_socket, **FAST)  # type: ignore[arg-type]
    again.connect()
    try:
        (seen,) = again.ports()
        assert seen.device_id == spec.device_id and seen.network == "red"
        assert seen.owner == Owner()  # pods come from the kubelet, not from VPP
        fake_vpp.clear_calls()
        adopted = again.plug(spec)
        assert changes(fake_vpp) == []
        assert adopted.owner == spec.owner and again.remembered() == (spec.device_id,)
    finally:
        again.close()


def test_vpp_created_sockets_lose_world_access(vpp_dir, vpp_spec):
    fake = FakeVpp(str(vpp_dir / "api.sock"), socket_mode=0o777)  # a VPP with a lax umask
    fake.start()
    backend = VppVSwitch(fake.api_socket, **FAST)  # type: ignore[arg-type]
    try:
        backend.connect()
        memif = vpp_spec("memif-vpp-n0-060", container_role="slave")
        vhost = vpp_spec("vhost-vpp-n0-061", kind="vhost-user", container_role="client")
        backend.plug(memif)
        backend.plug(vhost)
        for spec in (memif, vhost):
            assert stat.S_IMODE(os.stat(spec.socket_path).st_mode) & 0o007 == 0
    finally:
        backend.close()
        fake.crash()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"vlan": 100}, "vlan 100 is not supported on VPP"),
        ({"container_role": "server"}, "memif container_role 'server' is not slave or master"),
        ({"memif_mode": "punt"}, "memif_mode 'punt'"),
        ({"memif_mode": "ip"}, "memif_mode ip needs ip_address"),
        ({"memif_mode": "ip", "ip_address": "10.0.0.1"}, "has no prefix length"),
        ({"ip_address": "10.0.0.1/24"}, "ip_address is only for memif_mode ip"),
        ({"ring_size": 1000}, "ring_size 1000 must be a power of 2"),
        ({"buffer_size": 70000}, "buffer_size 70000"),
        ({"mac": "02:00:00:00:00"}, "mac '02:00:00:00:00'"),
        ({"mac": "01:00:5e:00:00:01"}, "multicast"),
        ({"mtu": 20000}, "mtu 20000"),
        ({"network": "has space"}, "network 'has space'"),
        ({"network": "x" * 60}, "network 'x"),
        ({"socket_path": "relative/sock"}, "must be an absolute path"),
        ({"socket_path": "/" + "d" * 120 + "/sock"}, "unix sockets allow 107"),
        ({"socket_path": "/nonexistent-numanet/s/x/sock"}, "does not exist; the device plugin"),
    ],
)
def test_bad_specs_are_refused_before_vpp_hears_of_them(
    vpp_switch, fake_vpp, vpp_spec, fields, message
):
    spec = vpp_spec("memif-vpp-n0-070", **fields)
    fake_vpp.clear_calls()

    with pytest.raises(VSwitchError, match=message) as info:
        vpp_switch.plug(spec)

    assert "memif-vpp-n0-070" in str(info.value)
    assert fake_vpp.calls == []


@pytest.mark.parametrize("device_id", ["../../etc", "0000:3b:00.0", "UPPER-n0-000", "a" * 70])
def test_device_ids_that_are_not_slot_ids_are_refused(vpp_switch, fake_vpp, vpp_spec, device_id):
    spec = vpp_spec("memif-vpp-n0-071")
    fake_vpp.clear_calls()

    with pytest.raises(VSwitchError, match="not a slot device ID"):
        vpp_switch.plug(spec.__class__(**{**spec.__dict__, "device_id": device_id}))
    with pytest.raises(VSwitchError, match="not a slot device ID"):
        vpp_switch.unplug(device_id)
    assert fake_vpp.calls == []


@pytest.mark.parametrize(
    "value",
    [
        "memif-vpp-n0-000",
        "a-n999-99999",
        "x" * 51 + "-n0-00000",  # 60 characters
        "x" * 54 + "-n12-0000",  # 63
        "x" * 55 + "-n12-0000",  # 64: too long
        "memif-vpp-n1000-000",
        "memif-vpp-n0-00",
        "memif-vpp-n0-000000",
        "-memif-n0-000",
        "memif--n0-000",
        "memif-vpp-n0-000\n",
        "Memif-n0-000",
        "0000:3b:00.0",
        "../../etc",
        "",
    ],
)
def test_slot_ids_are_the_ones_deviceplugin_names(value):
    """The VPP backend and the device plugin accept the same slot IDs (one pattern)."""
    try:
        naming.parse_slot_id(value)
        named = True
    except naming.InvalidName:
        named = False
    assert is_slot_id(value) is named


def test_socket_ids_a_half_done_plug_left_are_cleaned_up(vpp_switch, fake_vpp, vpp_spec):
    """A plug that died after registering the socket file, before creating the memif."""
    spec = vpp_spec("memif-vpp-n0-080")
    conn = vpp_switch._conn
    conn.call(
        "memif_socket_filename_add_del_v2",
        is_add=True,
        socket_id=1000,
        socket_filename=spec.socket_path,
    )

    port = vpp_switch.plug(spec)

    assert port.tags["vpp-memif-socket-id"] == "1000"
    assert {i: s.filename for i, s in fake_vpp.state.sockets.items() if i} == {
        1000: spec.socket_path
    }

    vpp_switch.unplug(spec.device_id)
    conn.call(
        "memif_socket_filename_add_del_v2",
        is_add=True,
        socket_id=1003,
        socket_filename=spec.socket_path,
    )
    assert vpp_switch.unplug(spec.device_id) is False  # no port, but the orphan goes
    assert set(fake_vpp.state.sockets) == {0}


def test_unplug_takes_the_port_out_of_its_bridge_domain_before_deleting_it(
    vpp_switch, fake_vpp, vpp_spec
):
    spec = vpp_spec("vhost-vpp-n0-081", kind="vhost-user", container_role="server")
    sw_if_index = int(vpp_switch.plug(spec).tags["vpp-sw-if-index"])
    fake_vpp.clear_calls()

    vpp_switch.unplug(spec.device_id)

    assert changes(fake_vpp) == [
        (
            "sw_interface_set_l2_bridge",
            {
                "rx_sw_if_index": sw_if_index,
                "bd_id": 1000,
                "port_type": 0,
                "shg": 0,
                "enable": False,
            },
        ),
        ("delete_vhost_user_if", {"sw_if_index": sw_if_index}),
        ("bridge_domain_add_del_v2", {**fake_vpp.calls_named("bridge_domain_add_del_v2")[0].args}),
    ]
    assert fake_vpp.calls_named("bridge_domain_add_del_v2")[0].args["is_add"] is False
