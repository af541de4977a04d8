"""MAC addresses for container interfaces: stable, locally administered, unicast."""

from __future__ import annotations

import hashlib
import re

from cni import errors
from cni.errors import CniError

# Six colon-separated hex pairs, as runtimeConfig.mac and CNI_ARGS MAC must be written.
MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


def stable_mac(device_id: str, container_id: str) -> str:
    """Same device and container give the same MAC, so a retried ADD does not change it."""
    digest = bytearray(hashlib.sha256(f"{device_id}/{container_id}".encode()).digest()[:6])
    # Set "locally administered", clear "multicast": never collides with a vendor MAC.
    digest[0] = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in digest)


def normalize_mac(mac: str, source: str, code: int = errors.INVALID_NETWORK_CONFIG) -> str:
    """Lower-case a MAC given by the runtime and refuse multicast/zero ones."""
    octets = mac.lower().split(":")
    first = int(octets[0], 16)
    if first & 0x01 or all(o == "00" for o in octets):
        raise CniError(code, f"{source} {mac} is not a unicast MAC",
                       "use a unicast address (first octet even), e.g. 02:00:00:00:00:01")
    return ":".join(octets)
