"""OVS-DPDK backend (ovsdbapp) and a private OVS-DPDK instance for demos and tests.

``OvsVSwitch`` is imported lazily: ``demo.private_ovs`` needs only the standard library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vswitch.ovs.backend import OvsVSwitch

__all__ = ["OvsVSwitch"]


def __getattr__(name: str) -> Any:
    if name == "OvsVSwitch":
        from vswitch.ovs.backend import OvsVSwitch

        return OvsVSwitch
    raise AttributeError(f"module 'vswitch.ovs' has no attribute {name!r}")
