"""What a ResourceClaim (resource.k8s.io/v1) asks of this driver on this node.

The scheduler wrote the allocation into the claim's status: ``status.allocation.devices.
results[]``, one entry per allocated device with its request, driver, pool and device.
Only this driver's results are numanet's; each must come from one of this node's pools
(``<node>/<pool>``) and name a device numanet publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deviceplugin import naming


class ClaimError(Exception):
    """The claim cannot be prepared as it is; the message says why, for the pod's events."""


@dataclass(frozen=True)
class ClaimDevice:
    request: str  # the claim's request this device serves
    pool: str  # numanet pool
    dra_pool: str  # <node>/<pool>, as in the ResourceSlice
    device_name: str  # as in the ResourceSlice
    device_id: str  # the slot ID (or PCI address)


def allocated_devices(claim: dict[str, Any], uid: str, driver: str, node: str
                      ) -> list[ClaimDevice]:
    meta = claim.get("metadata") or {}
    where = f"ResourceClaim {meta.get('namespace')}/{meta.get('name')}"
    if meta.get("uid") != uid:
        raise ClaimError(f"{where} has UID {meta.get('uid')}, not {uid}: it was deleted and "
                         "made again since the kubelet asked")
    allocation = (claim.get("status") or {}).get("allocation")
    if not allocation:
        raise ClaimError(f"{where} is not allocated yet")
    results = ((allocation.get("devices") or {}).get("results")) or []
    devices = []
    for result in results:
        if result.get("driver") != driver:
            continue
        dra_pool = result.get("pool", "")
        if not dra_pool.startswith(f"{node}/"):
            raise ClaimError(f"{where}: device {result.get('device')} is from pool {dra_pool}, "
                             f"which is not one of node {node}'s pools")
        try:
            device_id = naming.device_id_of_dra_name(result.get("device", ""))
            pool = naming.validate_pool_name(naming.pool_of_dra_pool(dra_pool))
        except naming.InvalidName as exc:
            raise ClaimError(f"{where}: {exc}") from None
        devices.append(ClaimDevice(result.get("request", ""), pool, dra_pool,
                                   result["device"], device_id))
    if len({d.device_id for d in devices}) != len(devices):
        raise ClaimError(f"{where} has a device twice in its allocation")
    return devices
