"""vSwitch backends behind one small interface: OVS-DPDK (ovsdbapp) and VPP (vpp-papi)."""

from __future__ import annotations

import inspect
from typing import Any

from vswitch.api import (
    Health,
    Owner,
    PluggedPort,
    PortSpec,
    VSwitch,
    VSwitchError,
    VSwitchUnavailable,
)

__all__ = [
    "Health",
    "Owner",
    "PluggedPort",
    "PortSpec",
    "VSwitch",
    "VSwitchError",
    "VSwitchUnavailable",
    "create",
]

_KINDS = ("ovs", "vpp")


def _backend_class(kind: str) -> type[VSwitch]:
    # Imported on demand: a process that uses one vSwitch never imports the other's client.
    if kind == "ovs":
        from vswitch.ovs.backend import OvsVSwitch

        return OvsVSwitch
    from vswitch.vpp import VppVSwitch

    return VppVSwitch


def create(kind: str, **endpoint: Any) -> VSwitch:
    """A backend for ``kind``, not connected yet (call ``connect()``).

    ``endpoint`` is passed to the backend's constructor: for "ovs" ``db``, ``bridge`` (and
    ``timeout``, ``vhost_sock_dir``); for "vpp" ``api_socket``, ``api_dir`` (and its tunables).
    An unknown kind or keyword is a ValueError naming it and what is accepted.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown vSwitch kind {kind!r}: use one of {', '.join(_KINDS)}")
    cls = _backend_class(kind)
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(endpoint) - set(accepted))
    if unknown:
        raise ValueError(
            f"vSwitch {kind!r} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}"
        )
    return cls(**endpoint)
