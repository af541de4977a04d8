"""vSwitch backends behind one small interface: OVS-DPDK (ovsdbapp) and VPP (vpp-papi)."""

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
]
