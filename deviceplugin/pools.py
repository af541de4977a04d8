"""Which slots each pool advertises: config + topology + where each vSwitch polls.

Pure functions, no I/O: the resource manager calls ``plan_pools`` again whenever one of
its inputs changes (topology rescan, vSwitch placement known, config reload) and compares
the result with what it advertises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from deviceplugin import naming
from deviceplugin.config import Config, HugepagesConfig, NicSelectors, PoolConfig
from deviceplugin.slots import Slot
from numa.model import PciNic, Topology


@dataclass(frozen=True)
class PoolPlan:
    """The slots of one pool and, for a person, why these NUMA nodes were chosen."""

    config: PoolConfig
    resource: str
    slots: tuple[Slot, ...]
    nodes: tuple[int, ...]  # NUMA nodes carrying socket slots (empty for NIC pools)
    note: str  # e.g. "auto: vSwitch ovs polls on 0,1 and 2Mi hugepages exist on 0,1"


def plan_pools(config: Config, topology: Topology,
               placements: Mapping[str, frozenset[int] | None],
               run_dir: Path) -> dict[str, PoolPlan]:
    """Every configured pool's plan, in config order.

    ``placements`` maps a vSwitch name to the NUMA nodes it polls on, or None when that is
    not known (vSwitch down, not connected yet, or it cannot tell).
    """
    plans: dict[str, PoolPlan] = {}
    claimed: set[str] = set()
    for pool in config.pools:
        resource = config.resource(pool.name)
        if pool.kind == "dpdk-nic":
            plans[pool.name] = _plan_nic_pool(pool, resource, topology, claimed)
        else:
            placement = placements.get(pool.vswitch or "")
            nodes, note = socket_pool_nodes(pool, topology, placement, config.hugepages)
            slots = tuple(
                _socket_slot(pool, resource, node, index, run_dir)
                for node in nodes for index in range(pool.slots_per_node)
            )
            plans[pool.name] = PoolPlan(pool, resource, slots, nodes, note)
    return plans


def socket_pool_nodes(pool: PoolConfig, topology: Topology, placement: frozenset[int] | None,
                      hugepages: HugepagesConfig) -> tuple[tuple[int, ...], str]:
    """NUMA nodes for a socket pool and a note saying how they were chosen."""
    page_size = hugepages.page_size
    existing = set(topology.node_ids)
    if pool.numa_nodes != "auto":
        listed = set(pool.numa_nodes)
        missing = sorted(listed - existing)
        nodes = tuple(sorted(listed & existing))
        note = f"numaNodes {_fmt(sorted(listed))} from the config"
        if missing:
            note += (f"; node(s) {_fmt(missing)} do not exist on this machine "
                     f"(nodes: {_fmt(sorted(existing))}) and get no slots")
        return nodes, note
    with_pages = {n.id for n in topology.nodes_with_hugepages(hugepages.page_size_kb)}
    if placement is None:
        nodes = tuple(sorted(with_pages))
        note = (f"auto: where vSwitch {pool.vswitch} polls is not known yet, so all nodes with "
                f"{page_size} hugepages: {_fmt(nodes) or 'none'}")
    else:
        nodes = tuple(sorted(with_pages & set(placement)))
        note = (f"auto: vSwitch {pool.vswitch} polls on {_fmt(sorted(placement)) or 'no node'} "
                f"and {page_size} hugepages exist on {_fmt(sorted(with_pages)) or 'no node'}")
    if not nodes:
        note += f": no slots (configure {page_size} hugepages on the vSwitch's nodes)"
    return nodes, note


def nic_matches(nic: PciNic, selectors: NicSelectors) -> bool:
    """Every non-empty selector list must match (a list matches when any entry does)."""
    checks = (
        (selectors.vendors, nic.vendor),
        (selectors.devices, nic.device),
        (selectors.drivers, nic.driver),
        (selectors.pf_names, nic.pf_name),
        (selectors.pci_addresses, nic.address),
    )
    return all(not wanted or value in wanted for wanted, value in checks)


def _plan_nic_pool(pool: PoolConfig, resource: str, topology: Topology,
                   claimed: set[str]) -> PoolPlan:
    assert pool.selectors is not None  # config validation guarantees it
    slots = []
    for nic in sorted(topology.nics, key=lambda n: n.address):
        # A NIC belongs to the first pool that matches it, never to two.
        if nic.address in claimed or not nic_matches(nic, pool.selectors):
            continue
        claimed.add(nic.address)
        slots.append(Slot(
            device_id=naming.validate_device_id(nic.address),
            pool=pool.name, resource=resource, kind="dpdk-nic", numa_node=nic.numa_node,
            pci_address=nic.address, iommu_group=nic.iommu_group, pf_pci_address=nic.physfn,
            pcie_root=nic.pcie_root,
        ))
    note = f"{len(slots)} NIC(s) match the selectors"
    return PoolPlan(pool, resource, tuple(slots), (), note)


def _socket_slot(pool: PoolConfig, resource: str, node: int, index: int, run_dir: Path) -> Slot:
    device_id = naming.slot_device_id(pool.name, node, index)
    return Slot(
        device_id=device_id, pool=pool.name, resource=resource, kind=pool.kind,
        numa_node=node, index=index, vswitch=pool.vswitch,
        container_role=pool.container_role, memif_mode=pool.memif_mode,
        host_dir=naming.slot_dir(run_dir, device_id),
        container_dir=naming.container_slot_dir(pool.name, device_id),
        ring_size=pool.ring_size, buffer_size=pool.buffer_size,
    )


def _fmt(nodes: Iterable[int]) -> str:
    return ",".join(str(n) for n in nodes)
