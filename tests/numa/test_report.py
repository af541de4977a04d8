"""``numanet topology``: the table and --json, through the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.sysfs import FakeSysfs, four_nodes, one_node, two_nodes

NUMANET = Path(sys.executable).parent / "numanet"


def numanet_topology(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NUMANET), "topology", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def expected_json(fake: FakeSysfs) -> dict:
    """What the command must say, built from the fixture's specs alone."""
    nics = sorted(fake.nics, key=lambda s: s.address)

    def node_of(spec) -> int | None:
        return spec.numa_node if isinstance(spec.numa_node, int) and spec.numa_node >= 0 else None

    netdev = {s.address: s.netdev for s in fake.pci}
    return {
        "sysfs": str(fake.root),
        "nodes": [
            {
                "id": n.id,
                "cpus": sorted(n.cpus),
                "memory_total_kb": n.mem_total_kb,
                "memory_free_kb": n.mem_free_kb,
                "hugepages": [{"page_size_kb": size, "total": total, "free": free}
                              for size, (total, free) in sorted(n.hugepages.items())],
                "nics": [s.address for s in nics if node_of(s) == n.id],
            }
            for n in sorted(fake.nodes, key=lambda n: n.id)
        ],
        "nics": [
            {
                "address": s.address,
                "numa_node": node_of(s),
                "driver": s.driver,
                "vendor": s.vendor,
                "device": s.device,
                "class": s.pci_class.removeprefix("0x"),
                "netdev": s.netdev,
                "iommu_group": None if s.iommu_group is None else str(s.iommu_group),
                "vfio_device": (f"/dev/vfio/{s.iommu_group}"
                                if s.driver == "vfio-pci" and s.iommu_group is not None
                                else None),
                "physfn": s.physfn,
                "vfs": [vf.address for vf in s.vfs],
                "pf_name": netdev[s.physfn] if s.physfn else s.netdev,
                "dpdk_ready": s.dpdk_ready,
            }
            for s in nics
        ],
        "warnings": [],
    }


def comparable(report: dict) -> dict:
    """Drop the keys that are derived presentation (cpulist, page_size, state...)."""
    out = json.loads(json.dumps(report))
    for node in out["nodes"]:
        node.pop("cpulist")
        for pages in node["hugepages"]:
            pages.pop("page_size")
    for nic in out["nics"]:
        nic.pop("state")
        nic.pop("sriov_totalvfs")
    return out


def test_json_reports_exactly_the_two_node_fixture(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    result = numanet_topology("--json", "--sysfs", str(fake.root))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert comparable(report) == expected_json(fake)
    # the presentation keys are there and agree with the data
    assert [n["cpulist"] for n in report["nodes"]] == ["0-3,8-11", "4-7,12-15"]
    assert report["nodes"][0]["hugepages"][0]["page_size"] == "2Mi"
    assert report["nodes"][1]["hugepages"][1]["page_size"] == "1Gi"
    states = {n["address"]: n["state"] for n in report["nics"]}
    assert states["0000:3b:01.0"] == "dpdk" and states["0000:3b:00.0"] == "kernel"


def test_json_one_and_four_nodes(tmp_path: Path) -> None:
    for preset in (one_node, four_nodes):
        fake = preset(tmp_path / preset.__name__)
        result = numanet_topology("--json", "--sysfs", str(fake.root))
        assert result.returncode == 0, result.stderr
        assert comparable(json.loads(result.stdout)) == expected_json(fake)


def test_table_reads_at_a_glance(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    result = numanet_topology("--sysfs", str(fake.root))
    assert result.returncode == 0, result.stderr
    sections = result.stdout.split("\n\n")
    assert len(sections) == 3
    node0, node1, unknown = sections
    assert node0.startswith("NUMA node 0   CPUs 0-3,8-11 (8)   memory 20.0 GiB free of 32.0 GiB")
    assert "hugepages  2Mi 1000/1024 free   1Gi 2/4 free" in node0
    assert node1.startswith("NUMA node 1   CPUs 4-7,12-15 (8)")
    assert "2Mi 512/512 free   1Gi 4/4 free" in node1
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if "0000:" in line}
    assert set(rows) == {s.address for s in fake.nics}
    assert "vfio-pci" in rows["0000:3b:01.0"] and " yes " in rows["0000:3b:01.0"]
    assert "/dev/vfio/31" in rows["0000:3b:01.0"] and "VF of ens1f0" in rows["0000:3b:01.0"]
    assert "no: kernel driver" in rows["0000:3b:00.0"] and "PF, 3/8 VFs" in rows["0000:3b:00.0"]
    assert "0000:3b:01.0" in node0 and "0000:af:00.1" in node1
    # the NIC without NUMA affinity is in its own group, not under node 0
    assert unknown.startswith("unknown NUMA node")
    assert "0000:00:03.0" in unknown and "0000:00:03.0" not in node0


def test_warnings_go_to_stderr_and_the_table_still_prints(tmp_path: Path) -> None:
    fake = two_nodes(tmp_path)
    numa_node = fake.path("bus/pci/devices/0000:af:00.0/numa_node")
    numa_node.write_text("banana\n")
    fake.path("devices/system/node/node1/meminfo").unlink()
    result = numanet_topology("--sysfs", str(fake.root))
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"warning: {fake.root}/devices/system/node/node1/meminfo: missing",
        f"warning: {numa_node}: not an integer: 'banana'",
    ]
    assert "memory ? free of ?" in result.stdout
    json_result = numanet_topology("--json", "--sysfs", str(fake.root))
    report = json.loads(json_result.stdout)
    assert len(report["warnings"]) == 2 and report["nodes"][1]["memory_total_kb"] is None
    assert next(n for n in report["nics"] if n["address"] == "0000:af:00.0")["numa_node"] is None


def test_bad_sysfs_root_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    result = numanet_topology("--sysfs", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("numanet topology: error: sysfs root")
    assert "Traceback" not in result.stderr


def test_this_machine(tmp_path: Path) -> None:
    result = numanet_topology("--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["sysfs"] == "/sys" and len(report["nodes"]) >= 1
    table = numanet_topology()
    assert table.returncode == 0 and table.stdout.startswith("NUMA node ")
