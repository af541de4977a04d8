"""The resource manager: what every pool advertises, each device's health, and who waits on it.

Kept apart from the gRPC servers (as NVIDIA's plugin keeps its ResourceManager apart):
the servers only read views from here and wait for a pool's generation to move. The agent
feeds ``update`` with fresh inputs (config, topology, vSwitch states); the manager works
out slots and health, and bumps the generation of every pool whose list or health changed,
which wakes that pool's ListAndWatch streams.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deviceplugin.config import Config, PoolConfig
from deviceplugin.health import SlotHealth, VSwitchState, hugepages_dir_present, slot_health
from deviceplugin.pools import plan_pools
from deviceplugin.preferred import DeviceLayout
from deviceplugin.slots import Slot
from deviceplugin.state import AllocationStore
from numa.model import Topology

log = logging.getLogger(__name__)

Listener = Callable[[frozenset[str]], None]


@dataclass(frozen=True)
class DeviceView:
    slot: Slot
    health: SlotHealth

    @property
    def device_id(self) -> str:
        return self.slot.device_id


@dataclass(frozen=True)
class PoolView:
    """One pool as advertised at one generation; immutable, safe to hand to any thread."""

    config: PoolConfig
    resource: str
    devices: tuple[DeviceView, ...]
    generation: int
    note: str = ""
    by_id: Mapping[str, DeviceView] = field(default_factory=dict, compare=False, repr=False)
    # where each device is, for preferred allocation; built once per generation
    layout: DeviceLayout = field(default_factory=lambda: DeviceLayout({}),
                                 compare=False, repr=False)
    # NUMA node -> (devices, healthy devices); unhealthy reason -> count (for status)
    per_node: Mapping[int | None, tuple[int, int]] = field(default_factory=dict,
                                                          compare=False, repr=False)
    reasons: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.config.name


def _build_view(config: PoolConfig, resource: str, devices: tuple[DeviceView, ...],
                generation: int, note: str) -> PoolView:
    per_node: dict[int | None, tuple[int, int]] = {}
    reasons: dict[str, int] = {}
    for device in devices:
        total, healthy = per_node.get(device.slot.numa_node, (0, 0))
        per_node[device.slot.numa_node] = (total + 1, healthy + device.health.healthy)
        if not device.health.healthy:
            reasons[device.health.reason] = reasons.get(device.health.reason, 0) + 1
    return PoolView(
        config, resource, devices, generation, note,
        by_id={d.device_id: d for d in devices},
        layout=DeviceLayout.of((d.device_id, d.slot.numa_node, (d.slot.index, d.device_id))
                               for d in devices),
        per_node=per_node, reasons=reasons,
    )


@dataclass(frozen=True)
class UpdateResult:
    changed: frozenset[str]  # pools whose device list or health changed (includes added)
    added: frozenset[str]
    removed: frozenset[str]


class ResourceManager:
    """Implements ``slots.SlotLookup`` for the CNI service; thread safe."""

    def __init__(self, run_dir: Path, allocations: AllocationStore | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.allocations = allocations or AllocationStore(self.run_dir)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pools: dict[str, PoolView] = {}
        self._devices: dict[str, DeviceView] = {}
        self._generation = 0
        self._config: Config | None = None
        self._listeners: list[Listener] = []
        self._placement: dict[str, frozenset[int]] = {}  # last known, per vSwitch
        self._inputs: tuple[Any, ...] | None = None

    # --- inputs ---

    def update(self, config: Config, topology: Topology,
               vswitches: Mapping[str, VSwitchState]) -> UpdateResult:
        """Recompute every pool from fresh inputs; wake the watchers of pools that changed."""
        placements = self._placements(vswitches)
        pages_dir = hugepages_dir_present(config.hugepages.path)
        inputs = (config, topology, dict(vswitches), placements, pages_dir)
        with self._lock:
            # Most rounds change nothing: skip rebuilding thousands of slots for them.
            if inputs == self._inputs:
                return UpdateResult(frozenset(), frozenset(), frozenset())
        plans = plan_pools(config, topology, placements, self.run_dir)
        with self._lock:
            self._inputs = inputs
            old = self._pools
            new: dict[str, PoolView] = {}
            changed: set[str] = set()
            quiet: set[str] = set()  # changed for status only
            for name, plan in plans.items():
                devices = tuple(
                    DeviceView(slot, slot_health(slot, topology, vswitches, config.hugepages,
                                                 pages_dir))
                    for slot in plan.slots
                )
                previous = old.get(name)
                if previous is not None and previous.config == plan.config \
                        and _visible(previous.devices) == _visible(devices):
                    # What the kubelet sees is unchanged: no new generation (no stream
                    # message); only reasons or the note may differ, for status.
                    if previous.devices != devices or previous.note != plan.note:
                        if previous.note != plan.note:
                            log.info("pool placement pool=%s note=%r", name, plan.note)
                        new[name] = _build_view(plan.config, plan.resource, devices,
                                                previous.generation, plan.note)
                        quiet.add(name)
                    else:
                        new[name] = previous
                    continue
                self._generation += 1
                new[name] = _build_view(plan.config, plan.resource, devices, self._generation,
                                        plan.note)
                changed.add(name)
                _log_pool_change(previous, new[name])
            removed = frozenset(old) - frozenset(new)
            added = frozenset(new) - frozenset(old)
            self._pools = new
            self._devices = {d.device_id: d for view in new.values() for d in view.devices}
            self._config = config
            if changed or removed:
                self._changed.notify_all()
            listeners = list(self._listeners)
        result = UpdateResult(frozenset(changed), added, removed)
        if changed or removed or quiet:
            _settle_heap()
            for listener in listeners:
                _call_listener(listener, result.changed | removed | quiet)
        return result

    def _placements(self, vswitches: Mapping[str, VSwitchState]
                    ) -> dict[str, frozenset[int] | None]:
        # A vSwitch that goes down keeps its last known placement: its slots should turn
        # Unhealthy, not move to the fallback nodes and back.
        with self._lock:
            for name, state in vswitches.items():
                if state.healthy and state.poll_nodes is not None:
                    self._placement[name] = state.poll_nodes
            return {name: self._placement.get(name) for name in vswitches}

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(pools)`` after every change; returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return unsubscribe

    def notify_allocation(self, pool: str) -> None:
        """Tell listeners (status, metrics) that a pool's allocations changed."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            _call_listener(listener, frozenset({pool}))

    # --- readers ---

    @property
    def config(self) -> Config | None:
        with self._lock:
            return self._config

    def pool_names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._pools)

    def pool(self, name: str) -> PoolView | None:
        with self._lock:
            return self._pools.get(name)

    def device(self, device_id: str) -> DeviceView | None:
        with self._lock:
            return self._devices.get(device_id)

    def wait_for_change(self, pool: str, generation: int, timeout: float,
                        cancelled: Callable[[], bool] = lambda: False) -> PoolView | None:
        """The pool's view once its generation differs from ``generation``; None on timeout,
        when ``cancelled()`` turns true (see ``wake_watchers``) or when the pool is gone."""
        with self._changed:
            self._changed.wait_for(
                lambda: cancelled() or (view := self._pools.get(pool)) is None
                or view.generation != generation,
                timeout=timeout,
            )
            view = self._pools.get(pool)
            return view if view is not None and view.generation != generation else None

    def wake_watchers(self) -> None:
        """Wake every waiting ListAndWatch so it can notice its server stopping."""
        with self._changed:
            self._changed.notify_all()

    def numa_node(self, device_id: str) -> int | None:
        """NUMA node of a device; None when unknown (or not a device numanet advertises)."""
        device = self.device(device_id)
        return device.slot.numa_node if device is not None else None

    # --- SlotLookup ---

    def slot(self, device_id: str) -> Slot | None:
        view = self.device(device_id)
        return view.slot if view else None

    def pool_resource(self, pool: str) -> str | None:
        view = self.pool(pool)
        return view.resource if view else None

    def pool_vswitch(self, pool: str) -> str | None:
        view = self.pool(pool)
        return view.config.vswitch if view else None


def _settle_heap() -> None:
    """Take what is alive now (the views just built: thousands of slots) out of the
    cyclic garbage collector's way.

    Otherwise every full collection walks all of them: a 20-30 ms pause (4096 slots) in
    whichever kubelet call happens to trigger it, the tail of Allocate and
    GetPreferredAllocation in bench/bench_deviceplugin.py. Collecting first keeps garbage
    out of the frozen set; after the first freeze a collection only walks younger
    objects, so later rebuilds pay a few milliseconds here, outside any kubelet call.
    Frozen objects are still freed by reference counting when the views are replaced.
    """
    gc.collect()
    gc.freeze()


def _visible(devices: tuple[DeviceView, ...]) -> list[tuple[str, bool, int | None]]:
    """What ListAndWatch tells the kubelet about the devices: ID, health, NUMA node."""
    return [(d.device_id, d.health.healthy, d.slot.numa_node) for d in devices]


def _log_pool_change(previous: PoolView | None, current: PoolView) -> None:
    healthy = sum(1 for d in current.devices if d.health.healthy)
    reasons = sorted({d.health.reason for d in current.devices if not d.health.healthy})
    log.info("pool devices pool=%s resource=%s devices=%d healthy=%d generation=%d note=%r%s",
             current.name, current.resource, len(current.devices), healthy, current.generation,
             current.note, f" unhealthy_reasons={reasons!r}" if reasons else "")
    if previous is None:
        return
    before = {d.device_id for d in previous.devices}
    after = {d.device_id for d in current.devices}
    if before - after:
        log.info("pool devices removed pool=%s device_ids=%s", current.name,
                 ",".join(sorted(before - after)[:20]))


def _call_listener(listener: Listener, pools: frozenset[str]) -> None:
    try:
        listener(pools)
    except Exception:  # a broken listener (metrics, status) must not stop the agent
        log.exception("resource manager listener failed pools=%s", ",".join(sorted(pools)))
