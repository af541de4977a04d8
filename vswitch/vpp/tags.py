"""How numanet marks what it creates in VPP, whose tags are string[64] (63 characters).

An interface's tag is the slot's device ID. Only slot IDs (``vswitch.api.SLOT_ID``)
count: memif and vhost-user ports always belong to slots, never to PCI devices, and the
stricter pattern keeps interfaces that other tools tagged out of numanet's hands. A
bridge domain's tag is ``numanet:<network>``.
"""

from __future__ import annotations

from vswitch.api import MAX_SLOT_ID, is_slot_id

MAX_TAG = MAX_SLOT_ID
BD_TAG_PREFIX = "numanet:"

__all__ = ["BD_TAG_PREFIX", "MAX_TAG", "is_slot_id"]
