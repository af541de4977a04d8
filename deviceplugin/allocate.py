"""Allocate: turn device IDs into what one container needs.

For a socket slot: its host directory ``<run-dir>/s/<id>/`` (root-owned, group set by
``--slot-group``, never world-accessible) mounted at ``/run/numanet/<pool>/<id>/``, the
device-info file, ``NUMANET_<POOL>`` and ``NUMANET_<POOL>_NUMA``, and the hugetlbfs
directory. For a NIC: ``/dev/vfio/vfio`` and its IOMMU group node, ``PCIDEVICE_<PREFIX>_<POOL>``
and a ``pci`` device-info file. With a CDI directory, mounts and device nodes go into
per-device CDI specs and the answer names them instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deviceplugin import cdi, naming
from deviceplugin.config import Config, HugepagesConfig
from deviceplugin.devinfo import write_device_info
from deviceplugin.fileio import remove_files
from deviceplugin.manager import ResourceManager
from deviceplugin.slots import Slot
from deviceplugin.state import AllocationRecord
from protos.deviceplugin.v1beta1 import api_pb2

log = logging.getLogger(__name__)

VFIO_CONTAINER = "/dev/vfio/vfio"


class AllocateError(Exception):
    """Allocate refused; ``invalid_argument`` says whether the kubelet asked for something wrong."""

    def __init__(self, message: str, invalid_argument: bool = False) -> None:
        super().__init__(message)
        self.invalid_argument = invalid_argument


@dataclass(frozen=True)
class AllocatorSettings:
    run_dir: Path = naming.DEFAULT_RUN_DIR
    devinfo_dir: Path = naming.DEVINFO_DIR
    cdi_dir: Path | None = None  # None: no CDI, mounts and device nodes in the answer
    slot_group: int | None = None  # gid that may use slot sockets; None: root only
    vfio_dir: Path = Path("/dev/vfio")  # host side of the IOMMU group nodes


@dataclass(frozen=True)
class DeviceEdits:
    """What a container gets for one device besides the environment."""

    mounts: tuple[cdi.CdiMount, ...] = ()
    nodes: tuple[cdi.CdiDeviceNode, ...] = ()


@dataclass(frozen=True)
class Grant:
    """Devices given out by one Allocate or one claim's Prepare."""

    slots: tuple[Slot, ...]
    edits: tuple[DeviceEdits, ...]  # per slot
    env: Mapping[str, str]  # NUMANET_<POOL>, NUMANET_<POOL>_NUMA, PCIDEVICE_...
    cdi_prefix: str | None  # set when per-slot CDI specs were written


class Allocator:
    def __init__(self, settings: AllocatorSettings, manager: ResourceManager) -> None:
        self.settings = settings
        self.manager = manager
        self._lock = threading.Lock()
        self._written: set[Path] = set()  # device-info files, removed at shutdown
        # Allocate and release one at a time: a release must never remove the files of an
        # Allocate that gave the device out again meanwhile.
        self._allocating = threading.Lock()
        self._listeners: list[Callable[[list[Slot]], None]] = []
        self._release_listeners: list[Callable[[str], None]] = []

    def on_allocated(self, listener: Callable[[list[Slot]], None]) -> None:
        """Call ``listener(slots)`` once the kubelet has the answer of a successful
        Allocate (``announce``), on a gRPC thread: slow work must be handed off."""
        self._listeners.append(listener)

    def on_released(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(device_id)`` after an allocation was released (a DRA claim
        unprepared, GC), so what was made for it ahead (a prepared port) can go too."""
        self._release_listeners.append(listener)

    def announce(self, pool: str, device_ids: Sequence[str]) -> None:
        """Tell the listeners about devices an Allocate gave out."""
        try:
            slots = self.resolve(pool, device_ids)
        except AllocateError as exc:  # the pool changed since: nothing to tell
            log.info("allocation not announced pool=%s devices=%s: %s", pool,
                     ",".join(device_ids), exc)
            return
        for listener in list(self._listeners):
            try:
                listener(slots)
            except Exception:  # noqa: BLE001 - one listener must not silence the others
                log.exception("allocation listener failed pool=%s devices=%s", pool,
                              ",".join(device_ids))

    def resolve(self, pool: str, device_ids: Sequence[str]) -> list[Slot]:
        """The slots of these IDs in ``pool``; AllocateError naming every unknown ID."""
        view = self.manager.pool(pool)
        if view is None:
            raise AllocateError(f"pool {pool} is not configured any more", invalid_argument=True)
        unknown: list[str] = []
        slots: list[Slot] = []
        for device_id in device_ids:
            try:
                naming.validate_device_id(device_id)
            except naming.InvalidName:
                unknown.append(repr(device_id)[:80])
                continue
            device = view.by_id.get(device_id)
            if device is None:
                unknown.append(device_id)
            else:
                slots.append(device.slot)
        if unknown:
            raise AllocateError(
                f"unknown device IDs for resource {view.resource}: {', '.join(unknown)}; "
                f"numanet advertises {len(view.devices)} devices in pool {pool} "
                "(see ListAndWatch or `numanet status`)", invalid_argument=True)
        if not slots:
            raise AllocateError("no device IDs in the request", invalid_argument=True)
        if len({s.device_id for s in slots}) != len(slots):
            raise AllocateError("a device ID appears twice in one container request",
                                invalid_argument=True)
        return slots

    def allocate(self, pool: str, device_ids: Sequence[str]) -> api_pb2.ContainerAllocateResponse:
        grant = self.grant(pool, device_ids)
        response = api_pb2.ContainerAllocateResponse()
        for slot, edits in zip(grant.slots, grant.edits, strict=True):
            if grant.cdi_prefix is not None:
                response.cdi_devices.add(name=cdi.cdi_device_name(grant.cdi_prefix,
                                                                  slot.device_id))
            else:
                _add_edits(response, edits)
        response.envs.update(grant.env)
        return response

    def grant(self, pool: str, device_ids: Sequence[str]) -> Grant:
        """What Allocate and a DRA claim's Prepare share: the slots of ``device_ids``
        resolved, their directories and device-info files written (and per-slot CDI specs
        for a device-plugin pool with a CDI directory), their allocation records kept;
        returns each slot's mounts and device nodes and the container environment."""
        slots = self.resolve(pool, device_ids)
        config = self.manager.config
        if config is None:  # pragma: no cover - servers start after the first update
            raise AllocateError("the agent has no configuration yet")
        prefix = config.resource_prefix
        devinfo: list[Path] = []
        specs: list[Path] = []
        cdi_dir = self._slot_cdi_dir(config, pool)
        with self._allocating:
            edits = self._give_out(slots, config, cdi_dir, devinfo, specs, device_ids)
        with self._lock:
            self._written.update(devinfo)
        self.manager.notify_allocation(pool)
        return Grant(tuple(slots), tuple(edits), container_env(prefix, pool, slots),
                     prefix if cdi_dir is not None else None)

    def _give_out(self, slots: list[Slot], config: Config, cdi_dir: Path | None,
                  devinfo: list[Path], specs: list[Path],
                  device_ids: Sequence[str]) -> list[DeviceEdits]:
        """Slot directories, device-info files (and CDI specs) and the allocation records;
        on failure, the files written so far go again."""
        prefix = config.resource_prefix
        given: list[DeviceEdits] = []
        try:
            for slot in slots:
                edits = self.edits(slot, config.hugepages)
                if slot.host_dir is not None:
                    self._prepare_slot_dir(slot.host_dir)
                devinfo.append(write_device_info(slot, self.settings.devinfo_dir))
                if cdi_dir is not None:
                    specs.append(cdi.write_spec(cdi_dir, prefix, slot.device_id,
                                                edits.mounts, edits.nodes))
                given.append(edits)
            for slot in slots:
                self.manager.allocations.record(slot.device_id, slot.pool, slot.resource,
                                                slot.numa_node)
        except (OSError, AllocateError) as exc:
            remove_files(devinfo + specs)
            if isinstance(exc, AllocateError):
                raise
            raise AllocateError(f"cannot prepare devices {', '.join(device_ids)}: {exc}") \
                from exc
        return given

    def _slot_cdi_dir(self, config: Config | None, pool: str) -> Path | None:
        """Where a pool's per-slot CDI specs go: none for a DRA pool (its claims carry
        their own spec, dra/prepare.py) and none without ``--cdi-dir``."""
        pool_config = config.pool(pool) if config is not None else None
        if pool_config is not None and pool_config.is_dra:
            return None
        return self.settings.cdi_dir

    def all(self) -> dict[str, AllocationRecord]:
        """Every device the kubelet allocated and no one released (device ID -> record)."""
        return self.manager.allocations.all()

    def release(self, device_id: str, expected: AllocationRecord | None = None) -> bool:
        """Forget an allocation no pod holds any more (the CNI's garbage collection calls
        this): its record, device-info file and CDI spec go; the slot directory stays for
        the next Allocate. False when the device was not allocated, or when ``expected``
        (the record the caller judged) is no longer the device's allocation."""
        naming.validate_device_id(device_id)
        with self._allocating:
            record = self.manager.allocations.get(device_id)
            if record is None or (expected is not None and record != expected):
                return False
            paths = [naming.devinfo_path(record.resource, device_id, self.settings.devinfo_dir)]
            config = self.manager.config
            cdi_dir = self._slot_cdi_dir(config, record.pool)
            if cdi_dir is not None and config is not None:
                paths.append(cdi.spec_path(cdi_dir, config.resource_prefix, device_id))
            remove_files(paths)
            with self._lock:
                self._written.difference_update(paths)
            released = self.manager.allocations.release(device_id)
        self.manager.notify_allocation(record.pool)
        log.info("allocation released device_id=%s pool=%s", device_id, record.pool)
        for listener in list(self._release_listeners):
            try:
                listener(device_id)
            except Exception:  # noqa: BLE001 - one listener must not silence the others
                log.exception("release listener failed device_id=%s", device_id)
        return released

    def restore(self) -> int:
        """Re-write the device-info files (and CDI specs) of devices a previous agent run
        allocated; returns how many devices were restored."""
        restored = 0
        config = self.manager.config
        for record in self.manager.allocations.all().values():
            device = self.manager.device(record.device_id)
            if device is None or config is None:
                continue
            try:
                path = write_device_info(device.slot, self.settings.devinfo_dir)
                cdi_dir = self._slot_cdi_dir(config, record.pool)
                if cdi_dir is not None:
                    edits = self.edits(device.slot, config.hugepages)
                    cdi.write_spec(cdi_dir, config.resource_prefix,
                                   record.device_id, edits.mounts, edits.nodes)
            except (OSError, AllocateError) as exc:
                log.warning("cannot restore device files device_id=%s error=%s",
                            record.device_id, exc)
                continue
            with self._lock:
                self._written.add(path)
            restored += 1
        return restored

    def cleanup(self) -> int:
        """Remove every device-info file this agent wrote, as the device-info spec asks.

        CDI specs stay: the runtime reads them again whenever an allocated container
        restarts, even while the agent is down; ``release`` removes them."""
        with self._lock:
            paths, self._written = list(self._written), set()
        return remove_files(paths)

    # --- internals ---

    def edits(self, slot: Slot, hugepages: HugepagesConfig) -> DeviceEdits:
        """What the container gets for one device: mounts and device nodes."""
        pages = cdi.CdiMount(str(hugepages.path), str(hugepages.path))
        if slot.kind == "dpdk-nic":
            if not slot.iommu_group:
                raise AllocateError(f"NIC {slot.device_id} has no IOMMU group: bind it to "
                                    "vfio-pci with the IOMMU enabled")
            group = _iommu_group(slot.iommu_group)
            nodes = (
                cdi.CdiDeviceNode(VFIO_CONTAINER, str(self.settings.vfio_dir / "vfio")),
                cdi.CdiDeviceNode(f"/dev/vfio/{group}", str(self.settings.vfio_dir / group)),
            )
            return DeviceEdits(mounts=(pages,), nodes=nodes)
        assert slot.host_dir is not None and slot.container_dir is not None
        return DeviceEdits(mounts=(cdi.CdiMount(str(slot.host_dir), str(slot.container_dir)),
                                   pages))

    def _prepare_slot_dir(self, path: Path) -> None:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            # First slot: <run-dir>/s is traversed by the vSwitch and the runtime (root);
            # nobody else may list the slot IDs in it.
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path.parent, 0o711)
            os.mkdir(path, 0o700)
        # O_NOFOLLOW: a symlink planted in place of a slot directory is refused, not followed.
        # O_DIRECTORY: a file there is refused (ENOTDIR), so fd is a directory.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            gid = self.settings.slot_group
            if os.geteuid() == 0:
                os.fchown(fd, 0, gid if gid is not None else 0)
            # Group may create (container-side server) or connect to the socket; others nothing.
            os.fchmod(fd, 0o770 if gid is not None else 0o750)
        finally:
            os.close(fd)


def _iommu_group(group: str) -> str:
    """An IOMMU group is a number; anything else must not reach a /dev path."""
    # isascii: str.isdigit() also takes digits such as '²' that are no group number.
    if not (group.isascii() and group.isdigit()):
        raise AllocateError(f"IOMMU group {group!r} is not a number")
    return group


def container_env(prefix: str, pool: str, slots: Sequence[Slot]) -> dict[str, str]:
    ids = [s.device_id for s in slots]
    env = {naming.pool_env_name(pool): ",".join(ids)}
    nodes = sorted({s.numa_node for s in slots if s.numa_node is not None})
    if nodes:
        env[naming.pool_numa_env_name(pool)] = ",".join(str(n) for n in nodes)
    if slots and slots[0].kind == "dpdk-nic":
        env[naming.pci_env_name(prefix, pool)] = ",".join(s.pci_address or s.device_id
                                                          for s in slots)
    return env


def _add_edits(response: api_pb2.ContainerAllocateResponse, edits: DeviceEdits) -> None:
    have_mounts = {m.container_path for m in response.mounts}
    for mount in edits.mounts:
        if mount.container_path not in have_mounts:
            response.mounts.add(container_path=mount.container_path, host_path=mount.host_path,
                                read_only=mount.read_only)
            have_mounts.add(mount.container_path)
    have_nodes = {d.container_path for d in response.devices}
    for node in edits.nodes:
        if node.path not in have_nodes:
            response.devices.add(container_path=node.path, host_path=node.host_path,
                                 permissions=node.permissions)
            have_nodes.add(node.path)
