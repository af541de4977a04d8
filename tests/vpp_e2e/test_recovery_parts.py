"""The parts of VPP recovery the end-to-end tests cannot pin down deterministically: the
backend's health while its replay runs, a second connect(), and the vSwitch monitor
probing each vSwitch on its own thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.deviceplugin import BASE_CONFIG, InMemoryVSwitchDouble

from agent.config_file import parse_config_text
from agent.vswitches import VSwitchMonitor
from deviceplugin.config import Config
from deviceplugin.health import VSwitchState
from tests.vswitch.vpp_fake import FakeVpp
from tests.vswitch.vpp_timing import FAST, wait_for
from vswitch.api import Health
from vswitch.vpp import VppVSwitch

pytest_plugins = ["tests.vswitch.vpp_fixtures"]  # fake_vpp, vpp_dir, vpp_spec, vpp_switch
pytestmark = pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")


class GatedVpp(FakeVpp):
    """The VPP stand-in, holding every memif_create_v2 until ``gate`` opens."""

    def __init__(self, api_socket: str) -> None:
        super().__init__(api_socket)
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Event()

    def _h_memif_create_v2(self, a: dict[str, Any]) -> dict[str, Any]:
        self.arrived.set()
        self.gate.wait(10)
        return super()._h_memif_create_v2(a)


@pytest.fixture
def gated_vpp(vpp_dir: Path) -> Iterator[GatedVpp]:
    fake = GatedVpp(str(vpp_dir / "api.sock"))
    fake.start()
    try:
        yield fake
    finally:
        fake.gate.set()
        fake.crash()


def test_slots_stay_unhealthy_until_the_replay_after_a_vpp_restart_is_done(gated_vpp,
                                                                          vpp_spec):
    backend = VppVSwitch(gated_vpp.api_socket, **FAST)  # type: ignore[arg-type]
    backend.connect(timeout=5.0)
    try:
        backend.plug(vpp_spec("memif-vpp-n0-000"))
        gated_vpp.gate.clear()
        gated_vpp.arrived.clear()
        gated_vpp.restart()
        assert gated_vpp.arrived.wait(5), "the backend did not replay after the restart"

        # The replay is stuck half way: health answers at once, and says not yet.
        answer: list[Health] = []
        probe = threading.Thread(target=lambda: answer.append(backend.health()), daemon=True)
        probe.start()
        probe.join(2.0)
        assert answer, "health() waited for the replay instead of answering"
        assert not answer[0].healthy and "putting slots back" in answer[0].reason

        gated_vpp.gate.set()
        wait_for(lambda: backend.health().healthy, what="healthy after the replay")
        assert {i.tag for i in gated_vpp.state.ifaces.values() if i.tag} == {"memif-vpp-n0-000"}
    finally:
        gated_vpp.gate.set()
        backend.close()


def test_connect_while_connected_keeps_the_connection_and_replays_nothing(vpp_switch, fake_vpp,
                                                                         vpp_spec):
    vpp_switch.plug(vpp_spec("memif-vpp-n0-001"))
    fake_vpp.clear_calls()
    vpp_switch.connect(timeout=1.0)
    assert fake_vpp.calls_named("sockclnt_create") == []
    assert fake_vpp.calls_named("sw_interface_dump") == []
    assert vpp_switch.health().healthy


class HungDouble(InMemoryVSwitchDouble):
    """TEST DOUBLE: a vSwitch whose health probe hangs until released."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()
        self.entered = threading.Event()

    def health(self) -> Health:
        self.entered.set()
        self.release.wait(30)
        return super().health()


def _config() -> Config:
    return parse_config_text(BASE_CONFIG.replace("@HUGEPAGES@", "/dev/hugepages"))


def test_a_hung_vswitch_does_not_hold_up_another_ones_health():
    hung = HungDouble("vpp")
    ovs = InMemoryVSwitchDouble("ovs")
    doubles = {"vpp": hung, "ovs": ovs}
    monitor = VSwitchMonitor(lambda name, _config: doubles[name], interval=0.02)
    monitor.configure(_config())
    monitor.start()
    try:
        assert hung.entered.wait(5)
        wait_for(lambda: monitor.states()["ovs"].healthy, what="ovs probed")
        ovs.set_health(False, "ovs went away")
        wait_for(lambda: monitor.states()["ovs"] == VSwitchState("ovs", False, "ovs went away"),
                 what="ovs unhealthy while vpp's probe hangs")
        assert monitor.states()["vpp"].reason == "not probed yet"
    finally:
        hung.release.set()
        monitor.stop()
    assert hung.closed and ovs.closed


def test_first_healthy_callbacks_run_once_per_backend_and_outage_callbacks_skip_vpp(
        fake_vpp: FakeVpp):
    ovs = InMemoryVSwitchDouble("ovs")
    made: list[VppVSwitch] = []

    def factory(name: str, config: Config) -> Any:
        if name == "ovs":
            return ovs
        made.append(VppVSwitch(fake_vpp.api_socket, **FAST))  # type: ignore[arg-type]
        return made[-1]

    monitor = VSwitchMonitor(factory, interval=0.02)
    monitor.configure(_config())
    monitor.start()
    first: list[str] = []
    after: list[str] = []
    try:
        wait_for(lambda: all(s.healthy for s in monitor.states().values()), what="both healthy")
        # Registered after both turned healthy: runs at once, for each of them.
        monitor.on_recovered(lambda name, _b: after.append(name))
        monitor.on_first_healthy(lambda name, _b: first.append(name))
        assert sorted(first) == ["ovs", "vpp"]

        fake_vpp.restart()  # VPP's backend replays by itself: no outage callback
        ovs.set_health(False, "down")
        wait_for(lambda: not monitor.states()["ovs"].healthy, what="ovs down")
        ovs.set_health(True)
        wait_for(lambda: after == ["ovs"], what="ovs back")
        wait_for(lambda: made[0].health().healthy, what="vpp back")
        wait_for(lambda: monitor.states()["vpp"].healthy, what="vpp healthy in the monitor")
        assert sorted(first) == ["ovs", "vpp"] and after == ["ovs"]
    finally:
        monitor.stop()


def test_a_new_vpp_endpoint_replaces_the_backend_and_closes_the_old_one():
    made: list[InMemoryVSwitchDouble] = []

    def factory(name: str, config: Config) -> InMemoryVSwitchDouble:
        made.append(InMemoryVSwitchDouble(name))
        return made[-1]

    monitor = VSwitchMonitor(factory, interval=0.02)
    first: list[InMemoryVSwitchDouble] = []
    monitor.on_first_healthy(lambda _n, backend: first.append(backend))  # type: ignore[arg-type]
    monitor.configure(_config())
    monitor.start()
    try:
        wait_for(lambda: len(first) == 2, what="both backends healthy")
        old_vpp = monitor.backends()["vpp"]
        ovs_line = '  ovs: {db: "unix:/nonexistent/db.sock", bridge: br-test}\n'
        assert ovs_line in BASE_CONFIG
        moved = BASE_CONFIG.replace(ovs_line, ovs_line + "  vpp: {apiSocket: /run/vpp/b.sock}\n")
        monitor.configure(parse_config_text(moved.replace("@HUGEPAGES@", "/dev/hugepages")))
        wait_for(lambda: len(first) == 3, what="the new VPP backend adopted once")
        new_vpp = monitor.backends()["vpp"]
        assert new_vpp is not old_vpp and first[-1] is new_vpp
        wait_for(lambda: old_vpp.closed, what="the old backend closed")  # type: ignore[attr-defined]
        assert not new_vpp.closed  # type: ignore[attr-defined]
    finally:
        monitor.stop()
    assert all(backend.closed for backend in made)
