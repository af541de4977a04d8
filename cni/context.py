"""What the CNI verbs need from the agent, in one record built once per agent."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cni.container_config import DEVINFO_ROOT
from cni.ipam import IpamDelegate
from cni.locks import DeviceLocks
from cni.netconf import NetConf
from cni.records import RecordStore
from deviceplugin.slots import SlotLookup
from vswitch.api import VSwitch


class PodResources(Protocol):
    def check_allocated(self, namespace: str, name: str, resource: str, device_id: str) -> None:
        """Raise CniError unless the kubelet allocated ``device_id`` to that pod."""

    def held_devices(self) -> set[tuple[str, str]]:
        """(resource, device ID) of every device the kubelet lists for any pod."""

    def pod_devices(self, namespace: str, name: str) -> dict[str, set[str]] | None:
        """resource -> device IDs the kubelet gave the pod; None when it knows no such pod."""


class Allocations(Protocol):
    """The device plugin's note of allocated devices (``deviceplugin.state.AllocationStore``)."""

    def all(self) -> Mapping[str, Any]: ...

    def release(self, device_id: str, expected: Any = None) -> bool:
        """Forget the allocation; with ``expected``, only while it is still that record."""


def not_known_down(name: str) -> str | None:
    """The default ``Context.vswitch_down``: no monitor, so no vSwitch is known down."""
    return None


@dataclass
class Context:
    """What the verbs need from the agent; built once, shared by every call."""

    slots: SlotLookup
    vswitches: Mapping[str, VSwitch]  # "ovs" | "vpp" -> connected backend
    pod_resources: PodResources
    run_dir: Path
    ipam: IpamDelegate = field(default_factory=IpamDelegate)
    devinfo_root: Path = DEVINFO_ROOT
    locks: DeviceLocks = field(default_factory=DeviceLocks)
    # When set, GC releases the allocations of devices no pod holds any more: the
    # kubelet never tells a device plugin that a device was freed.
    allocations: Allocations | None = None
    # Runs IPAM ADD and DEL beside the vSwitch plug and unplug; sized for a node's parallel calls.
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=16,
                                                   thread_name_prefix="cni-ipam"))
    # Work off the CNI's call path (ports prepared after Allocate, the periodic release of
    # allocations no pod holds): its own few workers, so that a burst of admissions never
    # makes an ADD's IPAM wait behind them.
    background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4,
                                                   thread_name_prefix="cni-background"))
    # vSwitch name -> why it is down when the agent's monitor last found it so, else None
    # (up, or not probed yet): an ADD on a vSwitch known down fails at once (code 11)
    # instead of waiting for it to apply the port.
    vswitch_down: Callable[[str], str | None] = not_known_down
    # Pool -> the network config of its last ADD: the shape of the ports prepared at
    # Allocate.
    port_shapes: dict[str, NetConf] = field(default_factory=dict)
    # Allocations the agent's last reconcile round found unheld (cni/reconcile.py).
    release_candidates: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.records = RecordStore(self.run_dir)

    def close(self) -> None:
        # Ports not prepared yet are not needed by a stopping agent; an ADD makes them.
        self.background.shutdown(wait=True, cancel_futures=True)
        self.executor.shutdown(wait=True)
        close = getattr(self.pod_resources, "close", None)
        if close is not None:
            close()
