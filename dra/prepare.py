"""Prepare and unprepare claims: what Allocate does, for a claim the scheduler allocated.

``prepare`` reads the claim from the API server (by namespace and name, checking the
UID), takes its allocation results for this driver, and gives the slots out through the
device plugin's own code (``Allocator.grant``: slot directory, hugepages mount,
device-info file, allocation record, so the CNI's ownership check and its ports prepared
at Allocate follow as for the device plugin). What the container gets goes into one CDI
spec per claim (``<cdi-dir>/<driver>-claim-<uid>.json``, kind ``<driver>/claim``), one
CDI device per allocated device (``<uid>-<device>``) with its mounts and device nodes;
the environment Allocate returns (``NUMANET_<POOL>``, ``NUMANET_<POOL>_NUMA``,
``PCIDEVICE_<PREFIX>_<POOL>``) lists every device of one request and pool, so it rides on
the first device of each: a container gets it with the request.

Both are idempotent (a prepared claim answers from the checkpoint, an unknown one
unprepares at once) and survive agent restarts (``dra/checkpoint.py``; the allocation
records and CDI specs are on disk too).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deviceplugin import cdi
from deviceplugin.allocate import AllocateError, Allocator, container_env
from deviceplugin.fileio import remove_files
from dra.checkpoint import ClaimCheckpoint, PreparedClaim, PreparedDevice
from dra.claims import ClaimDevice, ClaimError, allocated_devices
from dra.kube import ApiException, ResourceApi

log = logging.getLogger(__name__)


class PrepareError(Exception):
    """One claim could not be (un)prepared; goes into the claim's ``error`` for the kubelet."""


@dataclass(frozen=True)
class Prepared:
    claim: PreparedClaim
    announce: tuple[tuple[str, tuple[str, ...]], ...]  # (pool, device IDs) newly given out


class Preparer:
    def __init__(self, allocator: Allocator, api: ResourceApi, node: str, driver: str,
                 cdi_dir: Path, checkpoint: ClaimCheckpoint) -> None:
        self.allocator = allocator
        self.api = api
        self.node = node
        self.driver = driver
        self.cdi_dir = Path(cdi_dir)
        self.checkpoint = checkpoint
        # One claim at a time: two claims never race for one slot, and a release never
        # removes the files of a Prepare that gave the device out again.
        self._lock = threading.Lock()

    def prepare(self, namespace: str, name: str, uid: str) -> Prepared:
        known = self.checkpoint.get(uid)
        if known is not None:
            self._ensure_spec(known)
            return Prepared(known, ())
        try:
            claim = self.api.read_claim(namespace, name)
        except ApiException as exc:
            raise PrepareError(f"cannot read ResourceClaim {namespace}/{name}: HTTP "
                               f"{exc.status} {exc.reason}") from None
        except OSError as exc:
            raise PrepareError(f"cannot read ResourceClaim {namespace}/{name}: {exc}") from None
        try:
            devices = allocated_devices(claim, uid, self.driver, self.node)
        except ClaimError as exc:
            raise PrepareError(str(exc)) from None
        with self._lock:
            known = self.checkpoint.get(uid)
            if known is not None:
                return Prepared(known, ())
            return self._give_out(namespace, name, uid, devices)

    def unprepare(self, uid: str) -> bool:
        """Release a claim's devices and remove its CDI spec; False when it was not held."""
        with self._lock:
            claim = self.checkpoint.get(uid)
            if claim is None:
                return False
            for device in claim.devices:
                self.allocator.release(device.device_id)
            if claim.cdi_spec:
                remove_files([Path(claim.cdi_spec)])
            self.checkpoint.remove(uid)
        log.info("claim unprepared claim=%s/%s uid=%s devices=%s", claim.namespace, claim.name,
                 uid, ",".join(d.device_id for d in claim.devices))
        return True

    # --- internals ---

    def _give_out(self, namespace: str, name: str, uid: str,
                  devices: Sequence[ClaimDevice]) -> Prepared:
        for device in devices:
            holder = self.checkpoint.holder(device.device_id)
            if holder is not None:
                raise PrepareError(f"device {device.device_name} of pool {device.dra_pool} is "
                                   f"prepared for ResourceClaim {holder.namespace}/"
                                   f"{holder.name} ({holder.uid}) still")
        by_pool: dict[str, list[ClaimDevice]] = {}
        for device in devices:
            by_pool.setdefault(device.pool, []).append(device)
        granted: list[str] = []
        cdi_devices: list[cdi.CdiClaimDevice] = []
        prepared: list[PreparedDevice] = []
        spec: Path | None = None
        try:
            edits = {}
            slots = {}
            for pool, members in by_pool.items():
                grant = self.allocator.grant(pool, [d.device_id for d in members])
                granted += [s.device_id for s in grant.slots]
                for slot, slot_edits in zip(grant.slots, grant.edits, strict=True):
                    edits[slot.device_id] = slot_edits
                    slots[slot.device_id] = slot
            env = self._env_carriers(devices, slots)
            for device in devices:
                cdi_name = cdi.claim_device_name(uid, device.device_name)
                cdi_devices.append(cdi.CdiClaimDevice(
                    cdi_name, edits[device.device_id].mounts, edits[device.device_id].nodes,
                    env.get(device.device_id, {})))
                prepared.append(PreparedDevice(
                    device.request, device.pool, device.dra_pool, device.device_name,
                    device.device_id, (cdi.cdi_claim_device_id(self.driver, cdi_name),)))
            if cdi_devices:
                spec = cdi.write_claim_spec(self.cdi_dir, self.driver, uid, cdi_devices)
            claim = PreparedClaim(uid, namespace, name, tuple(prepared),
                                  str(spec) if spec else None)
            self.checkpoint.save(claim)
        except (AllocateError, OSError, ValueError) as exc:
            for device_id in granted:
                self.allocator.release(device_id)
            if spec is not None:
                remove_files([spec])
            raise PrepareError(f"cannot prepare ResourceClaim {namespace}/{name}: {exc}") \
                from None
        log.info("claim prepared claim=%s/%s uid=%s devices=%s numa=%s", namespace, name, uid,
                 ",".join(d.device_id for d in prepared),
                 ",".join(sorted({str(s.numa_node) for s in slots.values()
                                  if s.numa_node is not None})))
        return Prepared(claim, tuple((pool, tuple(d.device_id for d in members))
                                     for pool, members in by_pool.items()))

    def _env_carriers(self, devices: Sequence[ClaimDevice], slots: dict) -> dict[str, dict]:
        """device ID -> environment: on the first device of each (request, pool)."""
        groups: dict[tuple[str, str], list[ClaimDevice]] = {}
        for device in devices:
            groups.setdefault((device.request, device.pool), []).append(device)
        env: dict[str, dict] = {}
        for (_, pool), members in groups.items():
            env[members[0].device_id] = container_env(
                self.driver, pool, [slots[d.device_id] for d in members])
        return env

    def _ensure_spec(self, claim: PreparedClaim) -> None:
        """A repeated Prepare finds the spec it wrote; write it again if someone removed it."""
        if claim.cdi_spec is None or Path(claim.cdi_spec).exists():
            return
        config = self.allocator.manager.config
        if config is None:
            return
        devices = []
        members: dict[tuple[str, str], list[PreparedDevice]] = {}
        for device in claim.devices:
            members.setdefault((device.request, device.pool), []).append(device)
        firsts = {m[0].device_id: m for m in members.values()}
        for device in claim.devices:
            view = self.allocator.manager.device(device.device_id)
            if view is None:
                log.warning("cannot rewrite the CDI spec of claim uid=%s: device %s is gone",
                            claim.uid, device.device_id)
                return
            edits = self.allocator.edits(view.slot, config.hugepages)
            env = {}
            if device.device_id in firsts:
                group = [self.allocator.manager.slot(d.device_id)
                         for d in firsts[device.device_id]]
                env = container_env(self.driver, device.pool, [s for s in group if s])
            devices.append(cdi.CdiClaimDevice(cdi.claim_device_name(claim.uid,
                                                                    device.device_name),
                                              edits.mounts, edits.nodes, env))
        cdi.write_claim_spec(self.cdi_dir, self.driver, claim.uid, devices)
