"""ResourceSlices (resource.k8s.io/v1) from slots: a pure builder, no I/O.

One DRA pool per numanet pool and node, named ``<node>/<pool>``; each healthy slot is a
device (an unhealthy slot leaves the slice, so the scheduler stops choosing it). The API
server takes at most 128 devices in one ResourceSlice, so a pool of more slots spans
several slices, each saying how many make the pool (``resourceSliceCount``) and all at the
pool's current generation.

A device's attributes:

- ``resource.kubernetes.io/numaNode`` (int; absent when the node is unknown): the
  standard attribute (KEP-6072) that ``constraints: matchAttribute`` aligns across
  drivers, e.g. with dra-driver-cpu's CPUs;
- for NICs ``resource.kubernetes.io/pciBusID`` and ``resource.kubernetes.io/pcieRoot``;
- ``k8s.cni.cncf.io/resourceName`` (the pool's resource name, which a NAD's
  ``k8s.v1.cni.cncf.io/resourceName`` annotation must equal) and ``k8s.cni.cncf.io/deviceID``
  (the slot ID Multus passes to the CNI): Multus' DRA mode reads these two;
- ``<driver>/kind``, ``<driver>/vswitch``, ``<driver>/mode`` (vhost-user mode or memif role
  of the container side) for selectors in DeviceClasses and claims.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from deviceplugin import naming
from deviceplugin.slots import Slot

API_VERSION = "resource.k8s.io/v1"
KIND = "ResourceSlice"
MAX_DEVICES_PER_SLICE = 128  # resource.k8s.io/v1 ResourceSliceMaxDevices

ATTR_NUMA_NODE = "resource.kubernetes.io/numaNode"
ATTR_PCI_BUS_ID = "resource.kubernetes.io/pciBusID"
ATTR_PCIE_ROOT = "resource.kubernetes.io/pcieRoot"
ATTR_RESOURCE_NAME = "k8s.cni.cncf.io/resourceName"
ATTR_DEVICE_ID = "k8s.cni.cncf.io/deviceID"
# Label on every slice numanet publishes, so a person can find them (the publisher finds
# its own by the field selector spec.nodeName and spec.driver, as the kubelet does).
POOL_LABEL_SUFFIX = "pool"
_MAX_NAME = 253


@dataclass(frozen=True)
class PoolDevices:
    """One pool as it is to be published: its healthy slots and its generation."""

    pool: str
    resource: str
    generation: int
    slots: tuple[Slot, ...]


def device_attributes(slot: Slot, driver: str) -> dict[str, dict[str, Any]]:
    attributes: dict[str, dict[str, Any]] = {}
    if slot.numa_node is not None:
        attributes[ATTR_NUMA_NODE] = {"int": slot.numa_node}
    if slot.kind == "dpdk-nic":
        attributes[ATTR_PCI_BUS_ID] = {"string": slot.pci_address or slot.device_id}
        if slot.pcie_root:
            attributes[ATTR_PCIE_ROOT] = {"string": slot.pcie_root}
    attributes[ATTR_RESOURCE_NAME] = {"string": slot.resource}
    attributes[ATTR_DEVICE_ID] = {"string": slot.device_id}
    attributes[f"{driver}/kind"] = {"string": slot.kind}
    if slot.vswitch:
        attributes[f"{driver}/vswitch"] = {"string": slot.vswitch}
    if slot.container_role:
        attributes[f"{driver}/mode"] = {"string": slot.container_role}
    return attributes


def device(slot: Slot, driver: str) -> dict[str, Any]:
    return {"name": naming.dra_device_name(slot.device_id),
            "attributes": device_attributes(slot, driver)}


def slice_name(node: str, driver: str, pool: str, index: int) -> str:
    """A stable object name (a DNS subdomain): the publisher replaces its slices in place."""
    name = f"{node}-{driver}-{pool}-{index}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    # A cut just after one of the node's dots would leave ".-", which no DNS subdomain holds.
    head = name[:_MAX_NAME - len(digest) - len(str(index)) - 2].rstrip(".")
    return f"{head}-{digest}-{index}"


def pool_slices(node: str, driver: str, pool: PoolDevices) -> list[dict[str, Any]]:
    """The slices of one pool; one empty slice when no slot is healthy (the pool is
    still there, with nothing to give)."""
    devices = [device(slot, driver) for slot in pool.slots]
    chunks: Sequence[list[dict[str, Any]]] = [
        devices[i:i + MAX_DEVICES_PER_SLICE]
        for i in range(0, len(devices), MAX_DEVICES_PER_SLICE)] or [[]]
    dra_pool = naming.dra_pool_name(node, pool.pool)
    out = []
    for index, chunk in enumerate(chunks):
        spec: dict[str, Any] = {
            "driver": driver,
            "nodeName": node,
            "pool": {"name": dra_pool, "generation": pool.generation,
                     "resourceSliceCount": len(chunks)},
        }
        if chunk:
            spec["devices"] = chunk
        out.append({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": slice_name(node, driver, pool.pool, index),
                         "labels": {f"{driver}/{POOL_LABEL_SUFFIX}": pool.pool}},
            "spec": spec,
        })
    return out


def build_slices(node: str, driver: str, pools: Iterable[PoolDevices]) -> list[dict[str, Any]]:
    """Every slice of the node's DRA pools, pool by pool."""
    return [s for pool in pools for s in pool_slices(node, driver, pool)]
