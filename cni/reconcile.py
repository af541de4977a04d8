"""Giving back what the kubelet freed: the device plugin never hears that a pod ended.

The kubelet forgets a pod's devices when the pod is gone, but it tells no device plugin.
An allocation numanet recorded at Allocate (with its device-info file and the port
prepared for it) is therefore released when the kubelet lists the device for no pod and
no attachment holds it: at the runtime's CNI GC, and every few minutes from the agent for
runtimes that never call GC. The agent's rounds release a device only when two rounds in a
row found it unheld: a kubelet that has just restarted may not list a running pod yet.
"""

from __future__ import annotations

import logging
import time

from cni.context import Context
from cni.lookups import held_devices
from cni.prepare import remove_prepared

log = logging.getLogger(__name__)

# The agent's own rounds leave an allocation this long to show up in the kubelet's
# pod-resources answer: the pod is being admitted, its sandbox not yet made.
PERIODIC_MIN_AGE = 60.0


def release_unheld(ctx: Context, min_age: float = 0.0, confirmed: bool = False) -> list[str]:
    """Release the allocations older than ``min_age`` seconds that neither the kubelet nor
    an attachment holds, with the ports prepared for them; returns their device IDs.
    ``confirmed``: only those the previous confirmed call found unheld too. Skipped (not
    failed) while the kubelet cannot be asked."""
    if ctx.allocations is None:
        return []
    # Allocations first: one made while the kubelet is being asked is not in this
    # snapshot, so it cannot look unheld.
    allocated = dict(ctx.allocations.all())
    known = held_devices(ctx, "allocation release skipped")
    if known is None:
        return []
    held = {device_id for _, device_id in known}
    attached = {r.device_id for r in ctx.records.all()}
    cutoff = time.time() - min_age
    unheld = {d for d in set(allocated) - held - attached
              if getattr(allocated[d], "allocated_at", 0.0) <= cutoff}
    if confirmed:
        unheld, ctx.release_candidates = unheld & ctx.release_candidates, unheld
    released = []
    for device_id in sorted(unheld):
        # Only the allocation judged here: an Allocate meanwhile gave the device out again.
        if ctx.allocations.release(device_id, allocated[device_id]):
            log.info("allocation released device_id=%s (no pod holds it)", device_id)
            remove_prepared(ctx, device_id)
            released.append(device_id)
    return released
