"""Keep the node's ResourceSlices equal to what the DRA pools give, and remove them at the end.

``SlicePublisher.publish`` is one reconciliation: it knows the slices numanet has on the
API server (listed once, by ``spec.nodeName`` and ``spec.driver`` as the kubelet lists
them, then kept from the answers), builds the wanted ones (``dra/slices.py``), and writes
only the difference: a pool whose devices changed gets a new generation on all its
slices, slices no pool needs any more are deleted. A failed write makes the next call
list again (another writer, a conflict). ``SliceSync`` runs it on its own thread, woken
by the resource manager's changes (hotplug, vSwitch health, config), retrying with
backoff while the API server does not answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from deviceplugin.manager import ResourceManager
from dra.kube import ApiException, ResourceApi
from dra.slices import PoolDevices, build_slices, pool_slices

log = logging.getLogger(__name__)

_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 30.0

Pool = tuple[str, str, tuple[Any, ...]]  # (pool, resource, healthy slots)


def _content(obj: dict[str, Any]) -> tuple[Any, Any]:
    """What numanet sets on a slice (the rest is the API server's)."""
    return obj.get("spec"), (obj.get("metadata") or {}).get("labels")


class SlicePublisher:
    def __init__(self, api: ResourceApi, node: str, driver: str) -> None:
        self.api = api
        self.node = node
        self.driver = driver
        self._objects: dict[str, dict[str, Any]] | None = None  # name -> as on the server
        self._lock = threading.Lock()

    def published(self) -> list[dict[str, Any]]:
        with self._lock:
            return list((self._objects or {}).values())

    def publish(self, pools: Iterable[PoolDevices]) -> int:
        """Reconcile; ``generation`` of each PoolDevices is ignored (the publisher owns
        generations). Returns how many objects were written or deleted."""
        with self._lock:
            try:
                return self._publish(list(pools))
            except Exception:
                self._objects = None  # list again next time
                raise

    def _publish(self, pools: list[PoolDevices]) -> int:
        if self._objects is None:
            self._objects = {o["metadata"]["name"]: o
                             for o in self.api.list_slices(self.node, self.driver)}
        objects = self._objects
        wanted: dict[str, dict[str, Any]] = {}
        for pool in pools:
            generation = self._generation(pool.pool)
            same = [*pool_slices(self.node, self.driver, _at(pool, generation))]
            if not self._matches(same):
                same = pool_slices(self.node, self.driver, _at(pool, generation + 1))
            wanted.update((s["metadata"]["name"], s) for s in same)
        writes = 0
        for name, body in wanted.items():
            current = objects.get(name)
            if current is not None and _content(current) == _content(body):
                continue
            if current is None:
                objects[name] = self.api.create_slice(body)
            else:
                body = {**body, "metadata": {**body["metadata"], "resourceVersion":
                                             current["metadata"].get("resourceVersion")}}
                objects[name] = self.api.replace_slice(name, body)
            writes += 1
        for name in [n for n in objects if n not in wanted]:
            self.api.delete_slice(name)
            del objects[name]
            writes += 1
        if writes:
            log.info("ResourceSlices published node=%s driver=%s slices=%d writes=%d "
                     "pools=%s", self.node, self.driver, len(wanted), writes,
                     ",".join(f"{p.pool}:{len(p.slots)}" for p in pools))
        return writes

    def _generation(self, pool: str) -> int:
        assert self._objects is not None
        dra_pool = f"{self.node}/{pool}"
        return max((o["spec"]["pool"]["generation"] for o in self._objects.values()
                    if o["spec"]["pool"]["name"] == dra_pool), default=0)

    def _matches(self, slices: list[dict[str, Any]]) -> bool:
        assert self._objects is not None
        if not slices or slices[0]["spec"]["pool"]["generation"] == 0:
            return False
        names = {s["metadata"]["name"] for s in slices}
        dra_pool = slices[0]["spec"]["pool"]["name"]
        extra = [n for n, o in self._objects.items()
                 if o["spec"]["pool"]["name"] == dra_pool and n not in names]
        return not extra and all(
            s["metadata"]["name"] in self._objects
            and _content(self._objects[s["metadata"]["name"]]) == _content(s) for s in slices)

    def delete_all(self) -> int:
        """Remove every slice of this node and driver (agent shutdown)."""
        with self._lock:
            names = [o["metadata"]["name"] for o in self.api.list_slices(self.node, self.driver)]
            for name in names:
                self.api.delete_slice(name)
            self._objects = {}
        if names:
            log.info("ResourceSlices deleted node=%s driver=%s slices=%d", self.node,
                     self.driver, len(names))
        return len(names)


def _at(pool: PoolDevices, generation: int) -> PoolDevices:
    return PoolDevices(pool.pool, pool.resource, generation, pool.slots)


def dra_pools(manager: ResourceManager) -> list[PoolDevices]:
    """The DRA pools of the manager's current views, healthy slots only."""
    config = manager.config
    if config is None:
        return []
    out = []
    for name in config.pools_of("dra"):
        view = manager.pool(name)
        if view is None:
            continue
        out.append(PoolDevices(name, view.resource, 0,
                               tuple(d.slot for d in view.devices if d.health.healthy)))
    return out


class SliceSync:
    """Publishes on its own thread whenever the manager changes; deletes at ``stop``."""

    def __init__(self, publisher: SlicePublisher, manager: ResourceManager,
                 on_published: Callable[[], None] | None = None) -> None:
        self.publisher = publisher
        self.manager = manager
        self._on_published = on_published
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.last_error: str = ""
        self.in_sync = threading.Event()
        self._published_key: object = None

    def _key(self) -> object:
        """What the slices depend on: the DRA pools' generations (the manager moves a
        pool's generation when a device comes, goes, or changes health or NUMA node, or
        the pool's config changes). Allocations notify listeners too, without moving it:
        they must not cost a rebuild of thousands of devices."""
        config = self.manager.config
        if config is None:
            return None
        views = [(name, self.manager.pool(name)) for name in config.pools_of("dra")]
        return tuple((name, view.generation if view else None) for name, view in views)

    def _on_change(self, _pools: frozenset[str]) -> None:
        if self._key() != self._published_key:
            self.wake()

    def start(self) -> None:
        self._unsubscribe = self.manager.subscribe(self._on_change)
        self._thread = threading.Thread(target=self._run, name="dra-slices", daemon=True)
        self._thread.start()
        self.wake()

    def wake(self) -> None:
        self.in_sync.clear()
        self._wake.set()

    def stop(self, delete: bool = True) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if delete:
            try:
                self.publisher.delete_all()
            except (ApiException, OSError) as exc:
                log.warning("ResourceSlices not deleted at shutdown error=%s", _short(exc))

    def _run(self) -> None:
        backoff = _BACKOFF_START_S
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            self._wake.clear()
            key = self._key()
            try:
                self.publisher.publish(dra_pools(self.manager))
            except Exception as exc:  # API server away, conflict: try again later
                self.last_error = _short(exc)
                log.warning("ResourceSlice publication failed, retrying in %.1fs error=%s",
                            backoff, self.last_error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                self._wake.set()
                continue
            backoff = _BACKOFF_START_S
            self._published_key = key
            self.last_error = ""
            if not self._wake.is_set():
                self.in_sync.set()
            if self._on_published is not None:
                self._on_published()


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}: {str(exc.body or '')[:200]}"
    return f"{type(exc).__name__}: {exc}"[:300]


__all__ = ["SlicePublisher", "SliceSync", "build_slices", "dra_pools"]
