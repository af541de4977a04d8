"""udev hotplug events: translation, and a real netlink monitor on this machine."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import numa
from numa.hotplug import DeviceEvent, HotplugMonitor, event_from_device


@dataclass
class FakeUdevDevice:
    """Shaped like pyudev.Device as received from a monitor."""

    action: str | None
    subsystem: str | None
    sys_path: str
    driver: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)


def test_pci_bind_event() -> None:
    device = FakeUdevDevice(
        "bind", "pci", "/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:01.0", "vfio-pci",
        {"PCI_SLOT_NAME": "0000:3b:01.0", "PCI_CLASS": "20000", "DRIVER": "vfio-pci"})
    assert event_from_device(device) == DeviceEvent(
        action="bind", subsystem="pci", sys_path=device.sys_path, pci_address="0000:3b:01.0",
        netdev=None, driver="vfio-pci", pci_class="020000")


def test_pci_address_from_the_path_when_the_property_is_absent() -> None:
    # the last address in the path is the function; the first is its bridge
    device = FakeUdevDevice("remove", "pci", "/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:01.0")
    event = event_from_device(device)
    assert event is not None and event.pci_address == "0000:3b:01.0"


def test_unbind_and_remove_carry_no_driver() -> None:
    for action in ("unbind", "remove"):
        device = FakeUdevDevice(action, "pci", "/sys/devices/pci0000:00/0000:00:03.0",
                                "virtio-pci", {"DRIVER": "virtio-pci", "PCI_CLASS": "20000"})
        event = event_from_device(device)
        assert event is not None and event.driver is None and event.action == action


def test_net_event_names_interface_and_parent_function() -> None:
    device = FakeUdevDevice("add", "net", "/sys/devices/pci0000:00/0000:00:03.0/virtio2/net/eth0",
                            None, {"INTERFACE": "eth0", "IFINDEX": "2"})
    assert event_from_device(device) == DeviceEvent(
        action="add", subsystem="net", sys_path=device.sys_path, pci_address="0000:00:03.0",
        netdev="eth0", driver=None, pci_class=None)


def test_virtual_netdev_has_no_pci_address() -> None:
    device = FakeUdevDevice("add", "net", "/sys/devices/virtual/net/veth0", None,
                            {"INTERFACE": "veth0"})
    event = event_from_device(device)
    assert event is not None and event.pci_address is None and event.netdev == "veth0"


@pytest.mark.parametrize(
    "device",
    [
        # storage controllers and bridges are no use to any pool
        FakeUdevDevice("add", "pci", "/sys/devices/pci0000:00/0000:00:1f.2", "ahci",
                       {"PCI_SLOT_NAME": "0000:00:1f.2", "PCI_CLASS": "10601"}),
        FakeUdevDevice("add", "pci", "/sys/devices/pci0000:00/0000:00:00.0", None,
                       {"PCI_CLASS": "60000"}),
        FakeUdevDevice("online", "pci", "/sys/devices/pci0000:00/0000:00:03.0"),
        FakeUdevDevice(None, "pci", "/sys/devices/pci0000:00/0000:00:03.0"),
        FakeUdevDevice("add", "block", "/sys/devices/virtual/block/loop0"),
    ],
)
def test_events_numanet_ignores(device: FakeUdevDevice) -> None:
    assert event_from_device(device) is None


def test_malformed_pci_class_keeps_the_event() -> None:
    device = FakeUdevDevice("add", "pci", "/sys/devices/pci0000:00/0000:00:03.0", None,
                            {"PCI_CLASS": "zz"})
    event = event_from_device(device)
    assert event is not None and event.pci_class is None


def test_bad_source_is_refused() -> None:
    with pytest.raises(ValueError, match="use 'udev' or 'kernel'"):
        HotplugMonitor(lambda e: None, source="systemd")


# ---- a real netlink monitor --------------------------------------------------------------

def _started(monitor: HotplugMonitor) -> HotplugMonitor:
    try:
        monitor.start()
    except (OSError, ImportError) as exc:
        pytest.skip(f"cannot open a udev netlink monitor here: {exc}")
    return monitor


@contextlib.contextmanager
def running(callback, source: str = "kernel") -> Iterator[HotplugMonitor]:
    monitor = _started(HotplugMonitor(callback, source=source))
    try:
        yield monitor
    finally:
        monitor.stop(timeout=5)
        assert not monitor.running


def _wait_for(events: queue.Queue[DeviceEvent], predicate, timeout: float = 10.0
              ) -> tuple[DeviceEvent, list[DeviceEvent]]:
    """The first event matching ``predicate`` and every event seen before it."""
    before: list[DeviceEvent] = []
    while True:
        try:
            event = events.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no matching event within {timeout}s; saw {before}")
        if predicate(event):
            return event, before
        before.append(event)


@pytest.mark.parametrize("source", ["udev", "kernel"])
def test_real_monitor_starts_and_stops(source: str) -> None:
    monitor = _started(HotplugMonitor(lambda e: None, source=source))
    assert monitor.running
    with pytest.raises(RuntimeError, match="already started"):
        monitor.start()
    monitor.stop(timeout=5)
    assert not monitor.running
    monitor.stop()  # idempotent


def test_real_net_add_and_remove_events() -> None:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 not installed")
    events: queue.Queue[DeviceEvent] = queue.Queue()
    name = f"nmh{os.getpid() % 100000}"
    with running(events.put):
        created = subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name",
                                  f"{name}p"], capture_output=True, text=True, check=False)
        if created.returncode != 0:
            pytest.skip(f"cannot create a veth pair: {created.stderr.strip()}")
        try:
            added, _ = _wait_for(events, lambda e: e.netdev == name)
        finally:
            subprocess.run(["ip", "link", "del", name], check=False)
        removed, _ = _wait_for(events, lambda e: e.netdev == name and e.action == "remove")
    assert (added.action, added.subsystem, added.pci_address) == ("add", "net", None)
    assert added.sys_path.endswith(f"/net/{name}")
    assert removed.subsystem == "net"


def test_callback_failure_does_not_stop_the_monitor() -> None:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 not installed")
    events: queue.Queue[DeviceEvent] = queue.Queue()
    calls = []

    def flaky(event: DeviceEvent) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("consumer bug")
        events.put(event)

    name = f"nmf{os.getpid() % 100000}"
    with running(flaky) as monitor:
        created = subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name",
                                  f"{name}p"], capture_output=True, text=True, check=False)
        if created.returncode != 0:
            pytest.skip(f"cannot create a veth pair: {created.stderr.strip()}")
        subprocess.run(["ip", "link", "del", name], check=False)
        _wait_for(events, lambda e: e.netdev == name and e.action == "remove")
        assert monitor.running


def test_real_pci_change_event_for_a_nic_and_none_for_other_functions() -> None:
    """Synthetic ``change`` uevents on this machine's real PCI functions.

    Writing "change" to a device's uevent file makes the kernel emit a uevent for it
    and nothing else (no driver or device state changes).
    """
    nics = numa.discover().nics
    pci = Path("/sys/bus/pci/devices")
    others = [d for d in sorted(pci.iterdir()) if not (d / "class").read_text().startswith("0x02")
              ] if pci.is_dir() else []
    if not nics or not others:
        pytest.skip("needs a network and a non-network PCI function")
    nic = nics[0]
    events: queue.Queue[DeviceEvent] = queue.Queue()
    with running(events.put):
        try:
            # the other function first: events arrive in order, so if the filter let it
            # through it would show up before the NIC's
            (others[0] / "uevent").write_text("change")
            (pci / nic.address / "uevent").write_text("change")
        except OSError as exc:
            pytest.skip(f"cannot write a PCI uevent file here: {exc}")
        event, before = _wait_for(
            events, lambda e: e.subsystem == "pci" and e.pci_address == nic.address)
    assert (event.action, event.pci_class, event.driver) == ("change", "020000", nic.driver)
    assert others[0].name not in [e.pci_address for e in before]


def test_context_manager_starts_and_stops() -> None:
    monitor = HotplugMonitor(lambda e: None, source="kernel")
    try:
        with monitor as entered:
            assert entered is monitor and monitor.running
    except OSError as exc:
        pytest.skip(f"cannot open a udev netlink monitor here: {exc}")
    assert not monitor.running
