"""The note each pool plan carries for a person (``numanet status``, the agent log): the
whole sentence, since each part answers a question (where, why, what to fix)."""

from __future__ import annotations

from pathlib import Path

from helpers.sysfs import four_nodes, two_nodes

import numa
from agent.config_file import parse_config
from deviceplugin.pools import plan_pools

RUN = Path("/run/numanet")


def socket_pool(**extra: object) -> dict:
    return {"name": "vh", "kind": "vhost-user", "vswitch": "ovs", "slotsPerNode": 1, **extra}


def note(tmp_path: Path, pool: dict, placement: frozenset[int] | None, four: bool = False,
         page_size: str = "2Mi") -> str:
    root = tmp_path / f"sys{len(list(tmp_path.iterdir()))}"
    topology = numa.discover((four_nodes if four else two_nodes)(root))
    config = parse_config({"hugepages": {"pageSize": page_size}, "pools": [pool]})
    return plan_pools(config, topology, {"ovs": placement}, RUN)[pool["name"]].note


def test_listed_nodes(tmp_path: Path) -> None:
    assert note(tmp_path, socket_pool(numaNodes=[1, 0]), None) == \
        "numaNodes 0,1 from the config"


def test_listed_nodes_some_missing(tmp_path: Path) -> None:
    assert note(tmp_path, socket_pool(numaNodes=[1, 7, 5]), None) == \
        "numaNodes 1,5,7 from the config; node(s) 5,7 do not exist on this machine " \
        "(nodes: 0,1) and get no slots"


def test_auto_placement_unknown(tmp_path: Path) -> None:
    assert note(tmp_path, socket_pool(), None) == \
        "auto: where vSwitch ovs polls is not known yet, so all nodes with 2Mi hugepages: 0,1"


def test_auto_placement_known(tmp_path: Path) -> None:
    assert note(tmp_path, socket_pool(), frozenset({2, 1}), four=True, page_size="1Gi") == \
        "auto: vSwitch ovs polls on 1,2 and 1Gi hugepages exist on 0,2"


def test_auto_nothing_fits_says_what_to_configure(tmp_path: Path) -> None:
    assert note(tmp_path, socket_pool(), frozenset({3}), four=True, page_size="1Gi") == \
        "auto: vSwitch ovs polls on 3 and 1Gi hugepages exist on 0,2: no slots (configure " \
        "1Gi hugepages on the vSwitch's nodes)"
    assert note(tmp_path, socket_pool(), frozenset(), four=True, page_size="1Gi") == \
        "auto: vSwitch ovs polls on no node and 1Gi hugepages exist on 0,2: no slots " \
        "(configure 1Gi hugepages on the vSwitch's nodes)"


def test_nic_pools_count_their_nics(tmp_path: Path) -> None:
    pool = {"name": "nics", "kind": "dpdk-nic", "selectors": {"drivers": ["vfio-pci"]}}
    assert note(tmp_path, pool, None) == "3 NIC(s) match the selectors"
    pool = {"name": "none", "kind": "dpdk-nic", "selectors": {"vendors": ["ffff"]}}
    assert note(tmp_path, pool, None) == "0 NIC(s) match the selectors"
