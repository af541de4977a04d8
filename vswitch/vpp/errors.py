"""VPP's answers in words: retval codes and the error raised when a call fails.

VPP replies carry ``retval``: 0 is success, a negative number is a ``vnet_error_t``
(src/vnet/error.h in VPP, the ``foreach_vnet_error`` list). Only the codes the messages
numanet sends can return, plus the generic ones, are named here; any other code is
still reported, as a number.
"""

from __future__ import annotations

from vswitch.api import VSwitchError

# code -> (symbolic name without the VNET_API_ERROR_ prefix, VPP's own description)
_RETVALS: dict[int, tuple[str, str]] = {
    -1: ("UNSPECIFIED", "Unspecified Error"),
    -2: ("INVALID_SW_IF_INDEX", "Invalid sw_if_index"),
    -6: ("NO_SUCH_ENTRY", "No such entry"),
    -7: ("INVALID_VALUE", "Invalid value"),
    -8: ("INVALID_VALUE_2", "Invalid value #2"),
    -9: ("UNIMPLEMENTED", "Unimplemented"),
    -10: ("INVALID_SW_IF_INDEX_2", "Invalid sw_if_index #2"),
    -11: ("SYSCALL_ERROR_1", "System call error #1"),
    -12: ("SYSCALL_ERROR_2", "System call error #2"),
    -13: ("SYSCALL_ERROR_3", "System call error #3"),
    -14: ("SYSCALL_ERROR_4", "System call error #4"),
    -15: ("SYSCALL_ERROR_5", "System call error #5"),
    -16: ("SYSCALL_ERROR_6", "System call error #6"),
    -17: ("SYSCALL_ERROR_7", "System call error #7"),
    -18: ("SYSCALL_ERROR_8", "System call error #8"),
    -19: ("SYSCALL_ERROR_9", "System call error #9"),
    -20: ("SYSCALL_ERROR_10", "System call error #10"),
    -30: ("FEATURE_DISABLED", "Feature disabled by configuration"),
    -59: ("ADDRESS_LENGTH_MISMATCH", "Address length mismatch"),
    -60: ("ADDRESS_NOT_FOUND_FOR_INTERFACE", "Address not found for interface"),
    -68: ("SUBIF_ALREADY_EXISTS", "Subinterface already exists"),
    -70: ("INVALID_MEMORY_SIZE", "Invalid memory size requested"),
    -71: ("INVALID_INTERFACE", "Invalid interface"),
    -73: ("INVALID_ARGUMENT", "Invalid argument"),
    -74: ("UNEXPECTED_INTF_STATE", "Unexpected interface state"),
    -77: ("RESPONSE_NOT_READY", "Response not ready"),
    -78: ("NOT_CONNECTED", "Not connected to the data plane"),
    -79: ("IF_ALREADY_EXISTS", "Interface already exists"),
    -81: ("VALUE_EXIST", "Value already exists"),
    -85: ("NOT_RUNNING_AS_ROOT", "Not running as root"),
    -88: ("IP_PREFIX_INVALID", "IP prefix invalid (masked bits set in address"),
    -97: ("INVALID_ADDRESS_FAMILY", "Invalid address family"),
    -105: ("ADDRESS_IN_USE", "Address in use"),
    -114: ("ADDRESS_FOUND_FOR_INTERFACE", "Address found for interface"),
    -116: ("ENTRY_ALREADY_EXISTS", "Entry already exists"),
    -119: ("BD_ALREADY_EXISTS", "Bridge domain already exists"),
    -120: ("BD_IN_USE", "Bridge domain has member interfaces"),
    -121: ("BD_NOT_MODIFIABLE", "Bridge domain 0 can't be deleted/modified"),
    -122: ("BD_ID_EXCEED_MAX", "Bridge domain ID exceeds 16M limit"),
    -126: ("UNSUPPORTED", "Unsupported"),
    -127: ("DUPLICATE_IF_ADDRESS", "Address already present on another interface"),
    -144: ("INIT_FAILED", "Initialization Failed"),
    -151: ("NON_ETHERNET", "Interface is not an Ethernet interface"),
    -155: ("RSRC_IN_USE", "Resource In Use"),
    -162: ("LIMIT_EXCEEDED", "limit exceeded"),
    -165: ("EAGAIN", "Retry stream call with cursor"),
    -167: ("BUSY", "Busy"),
    -168: ("BUG", "Bug"),
    -171: ("TIMEOUT", "Timeout"),
}

# The codes the backend reacts to, by name.
INVALID_SW_IF_INDEX = -2
NO_SUCH_ENTRY = -6
IF_ALREADY_EXISTS = -79
BD_IN_USE = -120


def retval_name(retval: int) -> str:
    """``-2`` -> ``"VNET_API_ERROR_INVALID_SW_IF_INDEX"``; unknown codes keep their number."""
    known = _RETVALS.get(retval)
    return f"VNET_API_ERROR_{known[0]}" if known else f"retval {retval}"


def describe_retval(retval: int) -> str:
    """What a person reads, e.g. ``retval -2 VNET_API_ERROR_INVALID_SW_IF_INDEX (...)``."""
    known = _RETVALS.get(retval)
    if known is None:
        return f"retval {retval} (a code numanet has no name for; see VPP's src/vnet/error.h)"
    return f"retval {retval} VNET_API_ERROR_{known[0]} ({known[1]})"


class VppCallError(VSwitchError):
    """VPP answered a call with a non-zero retval."""

    def __init__(self, call: str, slot: str | None, retval: int, hint: str = "") -> None:
        self.call = call
        self.slot = slot
        self.retval = retval
        where = f"slot {slot}" if slot else "no slot"
        message = f"VPP refused {call} ({where}): {describe_retval(retval)}"
        if hint:
            message += f"; {hint}"
        super().__init__(message)
