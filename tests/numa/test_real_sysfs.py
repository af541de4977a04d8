"""Discovery on this machine's real /sys: facts true of any Linux box."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

import numa


@pytest.fixture(scope="module")
def topo() -> numa.Topology:
    if not Path("/sys/devices/system/cpu").is_dir():
        pytest.skip("no sysfs mounted at /sys")
    return numa.discover()


def test_at_least_one_node_and_every_online_cpu(topo: numa.Topology) -> None:
    assert len(topo.nodes) >= 1
    all_cpus = topo.cpus
    # nodes do not share CPUs
    assert sum(len(node.cpus) for node in topo.nodes) == len(all_cpus)
    assert len(all_cpus) == os.cpu_count()
    assert os.sched_getaffinity(0) <= all_cpus
    online = Path("/sys/devices/system/cpu/online").read_text()
    assert all_cpus == numa.parse_cpulist(online)


def test_memory_is_plausible(topo: numa.Topology) -> None:
    total = sum(node.memory_total_kb or 0 for node in topo.nodes)
    machine = psutil.virtual_memory().total // 1024
    # Per-node meminfo never exceeds the machine. It can fall short of it: hotplugged
    # memory (virtio-mem in a microVM, as on this CI box) may be missing from the node
    # counters while /proc/meminfo has it, so there is no lower bound beyond "some".
    assert 0 < total <= machine * 1.01
    for node in topo.nodes:
        assert node.memory_free_kb is not None and node.memory_total_kb is not None
        assert 0 <= node.memory_free_kb <= node.memory_total_kb


def test_hugepage_pools_match_the_kernel_totals(topo: numa.Topology) -> None:
    global_root = Path("/sys/kernel/mm/hugepages")
    for size_dir in global_root.iterdir():
        size_kb = numa.page_size_kb(size_dir.name)
        nr = int((size_dir / "nr_hugepages").read_text())
        per_node = sum(node.hugepage(size_kb).total for node in topo.nodes)
        assert per_node == nr, f"{size_dir.name}: nodes say {per_node}, kernel says {nr}"


def test_nics_are_network_class_with_sane_fields(topo: numa.Topology) -> None:
    pci = Path("/sys/bus/pci/devices")
    network = sorted(d.name for d in pci.iterdir()
                     if (d / "class").read_text().startswith("0x02")) if pci.is_dir() else []
    assert [nic.address for nic in topo.nics] == network
    for nic in topo.nics:
        assert nic.numa_node is None or nic.numa_node in topo.node_ids
        assert len(nic.vendor) == 4 and len(nic.device) == 4
        if nic.netdev is not None:
            assert Path("/sys/class/net", nic.netdev).exists()


def test_no_warnings_on_a_healthy_machine(topo: numa.Topology) -> None:
    assert topo.warnings == ()
