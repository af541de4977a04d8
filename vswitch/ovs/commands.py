"""The ovsdbapp commands numanet runs: plug (bridge if missing + port + interface), unplug,
the claim of a prepared port, and the memif queue update of a port OVS kept.

They run inside the connection thread, on its in-memory rows, so the existence checks
and the inserts of one command see the same database state.
"""

from __future__ import annotations

import time
from typing import Any

from ovsdbapp.backend.ovs_idl import command, idlutils

from vswitch.api import TAG_MEMIF_QUEUES, TAG_OWNER
from vswitch.ovs.connection import read_column
from vswitch.ovs.ports import OWNER_VALUE, PortPlan


class PlugRefused(RuntimeError):
    """The database state forbids the plug (bridge of the wrong type, name taken)."""


def find_bridge_of(tables: Any, port_row: Any) -> Any | None:
    for bridge in tables["Bridge"].rows.values():
        if port_row in read_column(bridge, "ports"):
            return bridge
    return None


class PlugPort(command.BaseCommand):  # type: ignore[misc]
    """Create the netdev bridge when missing, then the Port and its Interface."""

    def __init__(self, api: Any, plan: PortPlan) -> None:
        super().__init__(api)
        self.plan = plan

    def run_idl(self, txn: Any) -> None:
        plan = self.plan
        tables = self.api._tables
        if not tables["Open_vSwitch"].rows:
            raise PlugRefused("the database has no Open_vSwitch row: run 'ovs-vsctl init'")
        bridge = idlutils.row_by_value(self.api.idl, "Bridge", "name", plan.bridge, None)
        if bridge is None:
            bridge = self._add_bridge(txn)
        elif bridge.datapath_type != "netdev":
            raise PlugRefused(
                f"bridge {plan.bridge} has datapath_type={bridge.datapath_type or 'system'}; "
                "DPDK ports need a userspace (netdev) bridge: use another bridge name or "
                f"'ovs-vsctl set bridge {plan.bridge} datapath_type=netdev'"
            )
        if idlutils.row_by_value(self.api.idl, "Port", "name", plan.name, None) is not None:
            raise PlugRefused(f"port {plan.name} exists already (plugged concurrently?)")
        if idlutils.row_by_value(self.api.idl, "Interface", "name", plan.name, None) is not None:
            raise PlugRefused(f"interface {plan.name} exists already")
        iface = txn.insert(tables["Interface"])
        iface.name = plan.name
        iface.type = plan.iface_type
        iface.options = plan.options
        iface.external_ids = plan.iface_external_ids
        if plan.mtu_request is not None:
            iface.mtu_request = plan.mtu_request
        port = txn.insert(tables["Port"])
        port.name = plan.name
        port.interfaces = [iface]
        port.external_ids = plan.port_external_ids
        if plan.tag is not None:
            port.tag = plan.tag
        bridge.addvalue("ports", port)
        self.result = iface.uuid

    def _add_bridge(self, txn: Any) -> Any:
        tables = self.api._tables
        name = self.plan.bridge
        iface = txn.insert(tables["Interface"])
        iface.name = name
        iface.type = "internal"
        port = txn.insert(tables["Port"])
        port.name = name
        port.interfaces = [iface]
        bridge = txn.insert(tables["Bridge"])
        bridge.name = name
        bridge.datapath_type = "netdev"
        bridge.ports = [port]
        bridge.external_ids = {TAG_OWNER: OWNER_VALUE}
        self.api._ovs.addvalue("bridges", bridge)
        return bridge

    def post_commit(self, txn: Any) -> None:
        # Swap the provisional UUID for the one ovsdb-server assigned.
        self.result = txn.get_insert_uuid(self.result) or self.result


class UnplugPort(command.BaseCommand):  # type: ignore[misc]
    """Remove a port by name from whichever bridge holds it; result False when absent."""

    def __init__(self, api: Any, name: str) -> None:
        super().__init__(api)
        self.name = name

    def run_idl(self, txn: Any) -> None:
        port = idlutils.row_by_value(self.api.idl, "Port", "name", self.name, None)
        if port is None:
            self.result = False
            return
        bridge = find_bridge_of(self.api._tables, port)
        if bridge is not None:
            bridge.delvalue("ports", port)
        for iface in port.interfaces:
            iface.delete()
        port.delete()
        self.result = True


class ClaimPort(command.BaseCommand):  # type: ignore[misc]
    """Give a prepared port its owner: replace the external_ids of the Port and its
    Interface (only numanet reads them) and, with ``settings``, set the plan's VLAN tag and
    MTU request (ovs-vswitchd applies those). Result False when the port is gone."""

    def __init__(
        self,
        api: Any,
        plan: PortPlan,
        port_ids: dict[str, str],
        iface_ids: dict[str, str],
        settings: bool,
    ) -> None:
        super().__init__(api)
        self.plan = plan
        self.port_ids = port_ids
        self.iface_ids = iface_ids
        self.settings = settings

    def run_idl(self, txn: Any) -> None:
        plan = self.plan
        port = idlutils.row_by_value(self.api.idl, "Port", "name", plan.name, None)
        if port is None:
            self.result = False
            return
        port.external_ids = self.port_ids
        if self.settings:
            port.tag = [] if plan.tag is None else [plan.tag]
        for iface in port.interfaces:
            iface.external_ids = self.iface_ids
            if self.settings:
                iface.mtu_request = [] if plan.mtu_request is None else [plan.mtu_request]
        self.result = True


class SetMemifQueues(command.BaseCommand):  # type: ignore[misc]
    """Set a memif port's receive queues (``options:n_rxq``) and its queue tag on the
    Port and Interface together, so the count OVS uses and the one the container is
    told never disagree in the database. Result False when the port is gone."""

    def __init__(self, api: Any, name: str, pairs: int) -> None:
        super().__init__(api)
        self.name = name
        self.pairs = str(pairs)

    def run_idl(self, txn: Any) -> None:
        port = idlutils.row_by_value(self.api.idl, "Port", "name", self.name, None)
        if port is None:
            self.result = False
            return
        port.setkey("external_ids", TAG_MEMIF_QUEUES, self.pairs)
        for iface in port.interfaces:
            iface.setkey("options", "n_rxq", self.pairs)
            iface.setkey("external_ids", TAG_MEMIF_QUEUES, self.pairs)
        self.result = True


class Probe(command.BaseCommand):  # type: ignore[misc]
    """A harmless write (OVSDB only bumps next_cfg in a transaction that changes something).

    ovs-vswitchd acks it by raising cur_cfg, which proves it is alive and reading the database.
    """

    def run_idl(self, txn: Any) -> None:
        self.api._ovs.setkey("external_ids", "numanet-probe", str(time.time_ns()))
        self.result = None
