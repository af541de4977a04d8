"""How numanet marks what it creates in VPP, whose tags are string[64] (63 characters).

An interface's tag is the slot's device ID. Only slot IDs (``<pool>-n<numa>-<index>``,
DESIGN.md) count: memif and vhost-user ports always belong to slots, never to PCI
devices, and the stricter pattern keeps interfaces that other tools tagged out of
numanet's hands. A bridge domain's tag is ``numanet:<network>``.
"""

from __future__ import annotations

import re

MAX_TAG = 63
BD_TAG_PREFIX = "numanet:"
# deviceplugin.naming's slot ID, restated because vswitch imports nothing from deviceplugin
# (DESIGN.md): the same pattern and the same 63-character bound, so both accept exactly the
# same IDs; test_slot_ids_are_the_ones_deviceplugin_names (test_vpp_plug.py) holds them to it.
_SLOT_ID = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?-n[0-9]{1,3}-[0-9]{3,5}$")


def is_slot_id(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TAG and bool(_SLOT_ID.fullmatch(value))
