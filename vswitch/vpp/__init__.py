"""VPP backend of vswitch: memif and vhost-user slots in L2 bridge domains, via vpp-papi.

``VppVSwitch(api_socket, api_dir=None)`` is the class ``vswitch.create("vpp", ...)``
builds; see backend.py for how it survives VPP restarts (it replays the slots it plugged).
"""

from vswitch.vpp.backend import ReplayReport, VppVSwitch
from vswitch.vpp.errors import VppCallError

__all__ = ["ReplayReport", "VppCallError", "VppVSwitch"]
