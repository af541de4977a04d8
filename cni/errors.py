"""CNI errors: the spec's codes and JSON shape, and numanet's own codes (100 and up).

Every failure the CNI service reports becomes one ``CniError``; the service turns it into
``{"cniVersion", "code", "msg", "details"}`` on stdout with a non-zero exit, as the spec says.
``msg`` says what was wrong in one line, ``details`` says what to do about it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# Codes from the CNI spec 1.1.0, "Error" section.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
PLUGIN_NOT_AVAILABLE_LIMITED = 51

# numanet's codes (the spec leaves 100 and above to plugins).
DEVICE_NOT_ALLOCATED = 100  # the kubelet did not give this device ID to this pod
UNKNOWN_DEVICE = 101  # numanet advertises no device with this ID
DEVICE_MISMATCH = 102  # the device belongs to another pool/resource than the network names
VSWITCH_FAILURE = 103  # the vSwitch refused or failed the change
IPAM_FAILURE = 104  # the IPAM plugin failed without a usable error of its own
CHECK_FAILED = 105  # CHECK found the attachment missing or different
INTERNAL_ERROR = 199  # a bug in numanet: the agent log has the traceback


@dataclass
class CniError(Exception):
    code: int
    msg: str
    details: str = ""

    def __str__(self) -> str:
        return f"{self.msg} ({self.details})" if self.details else self.msg

    def to_dict(self, cni_version: str) -> dict[str, object]:
        out: dict[str, object] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def to_json(self, cni_version: str) -> str:
        return json.dumps(self.to_dict(cni_version))
