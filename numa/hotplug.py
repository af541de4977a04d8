"""PCI and network device hotplug / driver bind events from udev, delivered to a callback.

    def on_event(event: DeviceEvent) -> None: ...   # runs on the monitor's thread
    with HotplugMonitor(on_event):
        ...

Events are hints to look again (``numa.discover``), not state: udev may drop events when
its buffer overflows, so a consumer should rescan on any event rather than patch its view.
``source="udev"`` (default) sees events after udevd ran its rules (interface renamed,
device nodes made); ``source="kernel"`` sees the raw kernel events, for hosts or
containers without udevd.
"""

from __future__ import annotations

import logging
import os
import re
import select
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from numa.pci import PCI_ADDRESS_PATTERN

log = logging.getLogger(__name__)

ACTIONS = frozenset({"add", "remove", "bind", "unbind", "change", "move"})
DEFAULT_SUBSYSTEMS = ("pci", "net")
_PCI_ADDRESS = re.compile(PCI_ADDRESS_PATTERN)


@dataclass(frozen=True)
class DeviceEvent:
    action: str  # add | remove | bind | unbind | change | move
    subsystem: str  # pci | net
    sys_path: str
    pci_address: str | None  # the PCI function; for a net event, the one under the netdev
    netdev: str | None = None  # interface name (net events)
    driver: str | None = None  # driver bound, when the event says (not on unbind/remove)
    pci_class: str | None = None  # "020000" for pci events, when the event says


class UdevDeviceLike(Protocol):
    """What ``event_from_device`` needs of a pyudev ``Device``."""

    @property
    def action(self) -> str | None: ...
    @property
    def subsystem(self) -> str | None: ...
    @property
    def sys_path(self) -> str: ...
    @property
    def driver(self) -> str | None: ...
    @property
    def properties(self) -> Mapping[str, str]: ...


def event_from_device(device: UdevDeviceLike) -> DeviceEvent | None:
    """Translate a udev device event; ``None`` for events numanet does not care about.

    Dropped: unknown actions, other subsystems, and PCI functions whose class says they
    are not network controllers (storage, bridges...): no pool can use them.
    """
    action = device.action
    subsystem = device.subsystem
    if action not in ACTIONS or subsystem not in DEFAULT_SUBSYSTEMS:
        return None
    props = device.properties
    # The last address in the path is the function itself (bridges come before it).
    in_path = _PCI_ADDRESS.findall(device.sys_path)
    pci_address = in_path[-1] if in_path else None
    pci_class = None
    if subsystem == "pci":
        pci_address = props.get("PCI_SLOT_NAME") or pci_address
        raw_class = props.get("PCI_CLASS")
        if raw_class:
            try:
                pci_class = f"{int(raw_class, 16):06x}"
            except ValueError:
                pci_class = None
        if pci_class is not None and not pci_class.startswith("02"):
            return None
    netdev = props.get("INTERFACE") if subsystem == "net" else None
    driver = None if action in ("unbind", "remove") else (device.driver or props.get("DRIVER"))
    return DeviceEvent(
        action=action,
        subsystem=subsystem,
        sys_path=device.sys_path,
        pci_address=pci_address,
        netdev=netdev,
        driver=driver or None,
        pci_class=pci_class,
    )


class HotplugMonitor:
    """A udev netlink monitor on a background thread; ``stop()`` returns within milliseconds."""

    def __init__(
        self,
        callback: Callable[[DeviceEvent], None],
        *,
        source: str = "udev",
        subsystems: Iterable[str] = DEFAULT_SUBSYSTEMS,
    ) -> None:
        if source not in ("udev", "kernel"):
            raise ValueError(f"udev event source {source!r}: use 'udev' or 'kernel'")
        self._callback = callback
        self._source = source
        self._subsystems = tuple(subsystems)
        self._thread: threading.Thread | None = None
        self._monitor: Any = None
        self._wake_r = self._wake_w = -1

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Open the netlink socket (errors raise here, in the caller) and start the thread."""
        if self._thread is not None:
            raise RuntimeError("hotplug monitor already started")
        import pyudev  # only the agent pays for libudev

        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=self._source)
        for subsystem in self._subsystems:
            monitor.filter_by(subsystem)
        monitor.start()
        self._monitor = monitor
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="numa-hotplug", daemon=True)
        self._thread.start()
        log.info("hotplug monitor started source=%s subsystems=%s",
                 self._source, ",".join(self._subsystems))

    def stop(self, timeout: float = 2.0) -> None:
        thread = self._thread
        if thread is None:
            return
        os.write(self._wake_w, b"x")
        thread.join(timeout)
        if thread.is_alive():
            log.warning("hotplug monitor thread did not stop timeout_s=%.1f", timeout)
            return  # keep the fds: the thread still selects on them
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_r = self._wake_w = -1
        self._thread = None
        self._monitor = None  # libudev closes the netlink socket when the monitor goes
        log.info("hotplug monitor stopped")

    def __enter__(self) -> HotplugMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        monitor = self._monitor
        fd = monitor.fileno()
        while True:
            try:
                readable, _, _ = select.select([fd, self._wake_r], [], [])
            except InterruptedError:
                continue
            if self._wake_r in readable:
                return
            # Drain everything queued; poll(0) returns None when the socket is empty.
            while (device := self._receive(monitor)) is not None:
                event = event_from_device(device)
                if event is not None:
                    self._deliver(event)

    def _receive(self, monitor: Any) -> Any:
        try:
            return monitor.poll(timeout=0)
        except OSError as exc:
            # ENOBUFS: the kernel dropped events; consumers rescan on the next one anyway.
            log.warning("udev receive failed error=%s", exc)
            return None

    def _deliver(self, event: DeviceEvent) -> None:
        try:
            self._callback(event)
        except Exception:
            log.exception(
                "hotplug callback failed action=%s pci=%s netdev=%s",
                event.action, event.pci_address, event.netdev,
            )
