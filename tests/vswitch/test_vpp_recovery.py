"""VPP restarts forget every interface: the backend reconnects and replays its slots."""

from __future__ import annotations

import os
import queue
import time

import pytest

from tests.vswitch.vpp_fake import FakeVpp
from tests.vswitch.vpp_fixtures import is_socket
from tests.vswitch.vpp_timing import FAST, wait_for
from vswitch.api import VSwitchUnavailable
from vswitch.vpp import ReplayReport, VppVSwitch

pytest_plugins = ["tests.vswitch.vpp_fixtures"]  # fake_vpp, vpp_dir, vpp_spec, vpp_switch
pytestmark = pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")


def listen_for_reconnects(backend: VppVSwitch) -> queue.Queue[ReplayReport]:
    reports: queue.Queue[ReplayReport] = queue.Queue()
    backend.on_reconnect(reports.put)
    return reports


def tagged(fake: FakeVpp) -> dict[str, int]:
    return {i.tag: i.sw_if_index for i in fake.state.ifaces.values() if i.tag}


def test_a_vpp_restart_is_noticed_and_every_slot_is_replayed(vpp_switch, fake_vpp, vpp_spec):
    specs = [
        vpp_spec("memif-vpp-n0-000", container_role="slave", network="red", memif_id=4),
        vpp_spec(
            "memif-ip-n0-001", container_role="master", memif_mode="ip", ip_address="10.9.0.1/30"
        ),
        vpp_spec("vhost-vpp-n1-002", kind="vhost-user", container_role="client", network="red"),
        vpp_spec("vhost-vpp-n1-003", kind="vhost-user", container_role="server", network="blue"),
    ]
    before = {s.device_id: vpp_switch.plug(s) for s in specs}
    reports = listen_for_reconnects(vpp_switch)

    fake_vpp.restart()  # VPP comes back empty; nobody calls the backend

    report = reports.get(timeout=5)
    assert report.generation == 2 and report.failed == {}
    assert sorted(report.replugged) == sorted(before) and report.adopted == ()
    assert set(tagged(fake_vpp)) == set(before)
    after = {p.device_id: p for p in vpp_switch.ports()}
    for device_id, port in before.items():
        again = after[device_id]
        assert (again.kind, again.socket_path, again.network) == (
            port.kind,
            port.socket_path,
            port.network,
        )
        assert again.owner == port.owner
    state = fake_vpp.state
    assert all(i.admin_up for i in state.ifaces.values() if i.tag)
    assert {bd.tag for bd in state.bds.values()} == {"numanet:red", "numanet:blue"}
    assert state.ifaces[tagged(fake_vpp)["memif-ip-n0-001"]].addresses == ["10.9.0.1/30"]
    # The VPP-side listeners exist again.
    assert is_socket(specs[0].socket_path) and is_socket(specs[2].socket_path)
    assert vpp_switch.health().healthy


def test_slots_are_unhealthy_while_vpp_is_down_and_healthy_after(vpp_switch, fake_vpp, vpp_spec):
    vpp_switch.plug(vpp_spec("memif-vpp-n0-010"))
    lost: queue.Queue[str] = queue.Queue()
    vpp_switch.on_disconnect(lost.put)
    reports = listen_for_reconnects(vpp_switch)

    fake_vpp.crash()

    assert "VPP" in lost.get(timeout=5)
    health = vpp_switch.health()
    assert not health.healthy and fake_vpp.api_socket in health.reason
    time.sleep(0.3)  # several reconnect attempts fail meanwhile (backoff)
    assert reports.empty() and lost.empty()  # told once, not per attempt
    fake_vpp.clear_calls()

    fake_vpp.start()

    assert reports.get(timeout=5).replugged == ("memif-vpp-n0-010",)
    assert vpp_switch.health().healthy
    assert len(fake_vpp.calls_named("sockclnt_create")) == 1  # one connection after the restart


def test_a_dropped_connection_to_a_vpp_that_kept_running_adopts_the_ports(
    vpp_switch, fake_vpp, vpp_spec
):
    spec = vpp_spec("vhost-vpp-n0-020", kind="vhost-user", container_role="client")
    vpp_switch.plug(spec)
    reports = listen_for_reconnects(vpp_switch)
    fake_vpp.clear_calls()

    fake_vpp.drop_connections()

    report = reports.get(timeout=5)
    assert report.adopted == (spec.device_id,) and report.replugged == ()
    assert fake_vpp.calls_named("create_vhost_user_if_v2") == []
    assert len(fake_vpp.state.vhosts) == 1


def test_a_slot_unplugged_while_vpp_is_down_is_not_replayed(vpp_switch, fake_vpp, vpp_spec):
    gone = vpp_spec("memif-vpp-n0-030", container_role="slave")
    kept = vpp_spec("memif-vpp-n0-031", container_role="slave")
    vpp_switch.plug(gone)
    vpp_switch.plug(kept)
    reports = listen_for_reconnects(vpp_switch)
    fake_vpp.crash()
    wait_for(lambda: not vpp_switch.health().healthy, what="the backend to notice")

    with pytest.raises(VSwitchUnavailable):
        vpp_switch.unplug(gone.device_id)  # CNI DEL while VPP is down: the runtime retries it
    fake_vpp.start()

    assert reports.get(timeout=5).replugged == (kept.device_id,)
    assert list(tagged(fake_vpp)) == [kept.device_id]
    # The crashed VPP left the master socket file; the retried DEL removes it.
    assert is_socket(gone.socket_path)
    assert vpp_switch.unplug(gone.device_id) is False
    assert not os.path.lexists(gone.socket_path)
    assert vpp_switch.remembered() == (kept.device_id,)


def test_a_slot_that_fails_to_replay_is_reported_and_retried_next_time(
    vpp_switch, fake_vpp, vpp_spec
):
    good = vpp_spec("memif-vpp-n0-040")
    bad = vpp_spec("vhost-vpp-n0-041", kind="vhost-user", container_role="client")
    vpp_switch.plug(good)
    vpp_switch.plug(bad)
    reports = listen_for_reconnects(vpp_switch)
    fake_vpp.fail_next("create_vhost_user_if_v2", -12)  # SYSCALL_ERROR_2: bind() failed

    fake_vpp.restart()

    report = reports.get(timeout=5)
    assert report.replugged == (good.device_id,)
    assert list(report.failed) == [bad.device_id]
    assert "create_vhost_user_if_v2" in report.failed[bad.device_id]
    assert "VNET_API_ERROR_SYSCALL_ERROR_2" in report.failed[bad.device_id]
    assert vpp_switch.remembered() == (good.device_id, bad.device_id)

    fake_vpp.restart()

    report = reports.get(timeout=5)
    assert report.generation == 3 and report.failed == {}
    assert set(tagged(fake_vpp)) == {good.device_id, bad.device_id}


def test_connect_waits_for_a_vpp_that_comes_up_late(vpp_dir, vpp_spec):
    fake = FakeVpp(str(vpp_dir / "api.sock"))
    backend = VppVSwitch(fake.api_socket, **FAST)  # type: ignore[arg-type]
    try:
        with pytest.raises(VSwitchUnavailable):
            backend.connect(timeout=0.1)
        reports = listen_for_reconnects(backend)
        fake.start()
        wait_for(lambda: backend.health().healthy, what="the keeper to connect")
        backend.plug(vpp_spec("memif-vpp-n0-050"))
        assert reports.empty()  # the first connection is not a reconnect
    finally:
        backend.close()
        fake.crash()


def test_close_stops_reconnecting(vpp_switch, fake_vpp):
    vpp_switch.close()
    fake_vpp.clear_calls()
    fake_vpp.drop_connections()
    time.sleep(0.2)
    assert fake_vpp.calls_named("sockclnt_create") == []


def test_a_replay_reads_vpp_once_not_once_per_slot(vpp_switch, fake_vpp, vpp_spec):
    for i in range(6):
        kind = "memif" if i % 2 else "vhost-user"
        vpp_switch.plug(
            vpp_spec(
                f"slot-n0-{i:03d}", kind=kind, container_role="client" if i % 2 == 0 else "slave"
            )
        )
    reports = listen_for_reconnects(vpp_switch)
    fake_vpp.clear_calls()

    fake_vpp.restart()

    assert len(reports.get(timeout=5).replugged) == 6
    full_dumps = [
        c for c in fake_vpp.calls_named("sw_interface_dump") if c.args["sw_if_index"] == 0xFFFFFFFF
    ]
    assert len(full_dumps) == 1
    assert len(fake_vpp.calls_named("bridge_domain_dump")) == 1
    assert len(fake_vpp.calls_named("memif_socket_filename_dump")) == 1


def test_a_vhost_user_plug_does_not_read_memif_tables(vpp_switch, fake_vpp, vpp_spec):
    fake_vpp.clear_calls()
    vpp_switch.plug(vpp_spec("vhost-vpp-n0-090", kind="vhost-user", container_role="client"))
    assert fake_vpp.calls_named("memif_dump") == []
    assert fake_vpp.calls_named("memif_socket_filename_dump") == []
