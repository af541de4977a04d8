"""How the VPP backend reports failures: VPP's retvals, lost connections, missing APIs."""

from __future__ import annotations

import logging
import os

import pytest

from numa.model import Topology
from tests.vswitch.vpp_fake import API_DIR, FakeVpp
from tests.vswitch.vpp_timing import FAST, wait_for
from vswitch.api import VSwitchError, VSwitchUnavailable
from vswitch.vpp import VppCallError, VppVSwitch
from vswitch.vpp.errors import describe_retval, retval_name

pytest_plugins = ["tests.vswitch.vpp_fixtures"]  # fake_vpp, vpp_dir, vpp_spec, vpp_switch
pytestmark = pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")


def vpp_is_empty(fake: FakeVpp) -> bool:
    state = fake.state
    return (
        list(state.ifaces) == [0]
        and set(state.sockets) == {0}
        and state.memifs == {}
        and state.vhosts == {}
        and state.bds == {}
    )


def test_a_refused_call_names_the_call_the_slot_and_vpps_answer(vpp_switch, fake_vpp, vpp_spec):
    spec = vpp_spec("memif-vpp-n0-000")
    fake_vpp.fail_next("memif_create_v2", -73)

    with pytest.raises(VppCallError) as info:
        vpp_switch.plug(spec)

    error = info.value
    assert isinstance(error, VSwitchError)
    assert (error.call, error.slot, error.retval) == ("memif_create_v2", spec.device_id, -73)
    assert str(error) == (
        "VPP refused memif_create_v2 (slot memif-vpp-n0-000): "
        "retval -73 VNET_API_ERROR_INVALID_ARGUMENT (Invalid argument)"
    )


@pytest.mark.parametrize(
    ("kind", "role", "failing"),
    [
        ("memif", "slave", "memif_socket_filename_add_del_v2"),
        ("memif", "slave", "memif_create_v2"),
        ("memif", "slave", "sw_interface_tag_add_del"),
        ("memif", "slave", "sw_interface_set_l2_bridge"),
        ("memif", "slave", "sw_interface_set_flags"),
        ("vhost-user", "client", "create_vhost_user_if_v2"),
        ("vhost-user", "client", "sw_interface_set_mtu"),
        ("vhost-user", "server", "sw_interface_set_flags"),
    ],
)
def test_a_failed_plug_leaves_nothing_behind(vpp_switch, fake_vpp, vpp_spec, kind, role, failing):
    spec = vpp_spec("slot-n0-001", kind=kind, container_role=role, mtu=1500)
    fake_vpp.fail_next(failing, -2)

    with pytest.raises(VppCallError, match=failing):
        vpp_switch.plug(spec)

    assert vpp_is_empty(fake_vpp)
    assert not os.path.lexists(spec.socket_path)  # not even the file a memif master leaves
    assert vpp_switch.remembered() == ()
    assert vpp_switch.ports() == []


def test_a_failed_plug_keeps_a_bridge_domain_other_slots_use(vpp_switch, fake_vpp, vpp_spec):
    vpp_switch.plug(vpp_spec("memif-vpp-n0-002"))
    fake_vpp.fail_next("sw_interface_set_flags", -2)

    with pytest.raises(VppCallError):
        vpp_switch.plug(vpp_spec("memif-vpp-n0-003"))

    assert list(fake_vpp.state.bds) == [1000] and len(fake_vpp.state.bds[1000].members) == 1


def test_socket_path_taken_by_another_vhost_user_interface(vpp_switch, fake_vpp, vpp_spec):
    spec = vpp_spec("vhost-vpp-n0-004", kind="vhost-user", container_role="client")
    vpp_switch._conn.call(
        "create_vhost_user_if_v2", is_server=False, sock_filename=spec.socket_path
    )

    with pytest.raises(VppCallError, match="IF_ALREADY_EXISTS.*another VPP vhost-user interface"):
        vpp_switch.plug(spec)


def test_vpp_refusing_the_socket_directory(vpp_switch, fake_vpp, vpp_spec):
    spec = vpp_spec("memif-vpp-n0-005")
    os.chmod(os.path.dirname(spec.socket_path), 0o500)
    try:
        if os.access(os.path.dirname(spec.socket_path), os.W_OK):
            fake_vpp.fail_next("memif_socket_filename_add_del_v2", -73)  # root ignores modes
        with pytest.raises(
            VppCallError, match="memif_socket_filename_add_del_v2.*INVALID_ARGUMENT"
        ):
            vpp_switch.plug(spec)
    finally:
        os.chmod(os.path.dirname(spec.socket_path), 0o700)
    assert vpp_is_empty(fake_vpp)


def test_codes_without_a_name_are_still_reported():
    assert retval_name(-2) == "VNET_API_ERROR_INVALID_SW_IF_INDEX"
    assert retval_name(-999) == "retval -999"
    assert "retval -999" in describe_retval(-999) and "src/vnet/error.h" in describe_retval(-999)
    assert str(VppCallError("memif_delete", None, -999)).startswith(
        "VPP refused memif_delete (no slot)"
    )


def test_a_vpp_without_the_memif_plugin(vpp_dir, vpp_spec):
    fake = FakeVpp(str(vpp_dir / "api.sock"), plugins=("vhost_user",))
    fake.start()
    backend = VppVSwitch(fake.api_socket, **FAST)  # type: ignore[arg-type]
    try:
        backend.connect()
        with pytest.raises(
            VSwitchError, match="does not offer memif_socket_filename_add_del_v2.*memif_plugin"
        ):
            backend.plug(vpp_spec("memif-vpp-n0-006"))
        port = backend.plug(
            vpp_spec("vhost-vpp-n0-007", kind="vhost-user", container_role="client")
        )
        assert [p.device_id for p in backend.ports()] == [port.device_id]
    finally:
        backend.close()
        fake.crash()
    assert not fake.unhandled


def test_explicit_api_dir_instead_of_bootstrapping(vpp_dir, vpp_spec):
    fake = FakeVpp(str(vpp_dir / "api.sock"), serve_api_json=False)  # a VPP older than 23.10
    fake.start()
    try:
        bootstrapping = VppVSwitch(fake.api_socket, **FAST)  # type: ignore[arg-type]
        with pytest.raises(VSwitchError, match="get_api_json: set api_dir") as info:
            bootstrapping.connect(timeout=1.0)
        assert not isinstance(info.value, VSwitchUnavailable)
        bootstrapping.close()

        backend = VppVSwitch(fake.api_socket, api_dir=str(API_DIR), **FAST)  # type: ignore[arg-type]
        backend.connect()
        try:
            port = backend.plug(vpp_spec("memif-vpp-n0-008"))
            assert port.port_name == "memif1000/0" and backend.health().healthy
        finally:
            backend.close()
        assert fake.calls_named("get_api_json") == []
    finally:
        fake.crash()


def test_an_api_dir_without_definitions(vpp_dir, fake_vpp):
    empty = vpp_dir / "empty-api"
    empty.mkdir()
    backend = VppVSwitch(fake_vpp.api_socket, api_dir=str(empty), **FAST)  # type: ignore[arg-type]

    with pytest.raises(VSwitchError, match=f"no usable VPP API definitions.*under {empty}"):
        backend.connect(timeout=1.0)
    backend.close()


def test_no_vpp_at_the_socket(vpp_dir, vpp_spec):
    backend = VppVSwitch(str(vpp_dir / "nothing.sock"), **FAST)  # type: ignore[arg-type]
    try:
        with pytest.raises(
            VSwitchUnavailable, match="cannot reach the VPP API socket .*nothing.sock"
        ):
            backend.connect(timeout=0.2)
        health = backend.health()
        assert not health.healthy and "nothing.sock" in health.reason
        with pytest.raises(VSwitchUnavailable, match="memif-vpp-n0-009.*not connected to VPP"):
            backend.plug(vpp_spec("memif-vpp-n0-009"))
        assert backend.poll_numa_nodes(Topology(nodes=())) is None
    finally:
        backend.close()


def test_a_vpp_that_stays_away_is_reported_once_not_per_retry(vpp_dir, caplog):
    backend = VppVSwitch(str(vpp_dir / "nothing.sock"), **FAST)  # type: ignore[arg-type]
    caplog.set_level(logging.DEBUG, logger="vswitch.vpp.backend")
    try:
        with pytest.raises(VSwitchUnavailable):
            backend.connect(timeout=0.2)
        # The keeper goes on retrying (backoff capped at 0.2 s): several rounds, one warning.
        wait_for(lambda: sum("not reachable" in r.message for r in caplog.records) >= 4,
                 what="several reconnect attempts")
    finally:
        backend.close()
    tries = [r for r in caplog.records if "not reachable" in r.message]
    assert [r.levelno for r in tries].count(logging.WARNING) == 1, [r.message for r in tries]


def test_a_call_on_a_dead_connection_is_retryable_not_a_hang(vpp_switch, fake_vpp, vpp_spec):
    spec = vpp_spec("memif-vpp-n0-010")
    fake_vpp.crash()

    with pytest.raises(VSwitchUnavailable, match="memif-vpp-n0-010"):
        vpp_switch.plug(spec)
    with pytest.raises(VSwitchUnavailable):
        vpp_switch.ports()
