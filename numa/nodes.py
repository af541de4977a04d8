"""NUMA nodes from ``devices/system/node``: CPUs, memory and hugepages per page size.

A kernel built without NUMA has no ``devices/system/node``; the machine is then one
node 0 holding every online CPU, with the global hugepage pools of ``kernel/mm/hugepages``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import psutil

from numa._sysfs import SysfsReader
from numa.cpus import parse_cpulist, parse_cpumask
from numa.model import HugepageCount, NumaNode

_NODE_DIR = re.compile(r"^node(\d+)$")
_CPU_DIR = re.compile(r"^cpu(\d+)$")
_HUGEPAGE_DIR = re.compile(r"^hugepages-(\d+)kB$")
_MEMINFO_LINE = re.compile(r"^Node\s+\d+\s+(\w+):\s+(\d+)\s*kB$")


def read_nodes(fs: SysfsReader) -> tuple[NumaNode, ...]:
    node_root = fs.root / "devices" / "system" / "node"
    ids = sorted(
        int(m.group(1)) for name in fs.listdir(node_root) if (m := _NODE_DIR.fullmatch(name))
    )
    if not ids:
        return (_single_node(fs),)
    _check_online(fs, node_root / "online", ids)
    return tuple(_read_node(fs, node_root / f"node{node_id}", node_id) for node_id in ids)


def _check_online(fs: SysfsReader, path: Path, ids: list[int]) -> None:
    text = fs.read(path, required=False)
    online = _parsed(fs, path, text, parse_cpulist)  # same list syntax as CPUs
    if online is not None and online != frozenset(ids):
        fs.warn(path, f"says nodes {text!r} are online but found directories for {ids}")


def _read_node(fs: SysfsReader, node_dir: Path, node_id: int) -> NumaNode:
    total, free = _read_meminfo(fs, node_dir / "meminfo")
    return NumaNode(
        id=node_id,
        cpus=_read_node_cpus(fs, node_dir),
        memory_total_kb=total,
        memory_free_kb=free,
        hugepages=_read_hugepages(fs, node_dir / "hugepages"),
    )


def _read_node_cpus(fs: SysfsReader, node_dir: Path) -> frozenset[int]:
    any_file = False
    for name, parse in (("cpulist", parse_cpulist), ("cpumap", parse_cpumask)):
        text = fs.read(node_dir / name, required=False)
        any_file |= text is not None
        parsed = _parsed(fs, node_dir / name, text, parse)
        if parsed is not None:
            return parsed
    # Last resort: the node directory links each of its CPUs as cpuN.
    cpus = _cpu_entries(fs, node_dir)
    if not any_file and not cpus:
        fs.warn(node_dir / "cpulist", "missing (no cpulist, cpumap or cpuN entries)")
    return cpus


def _parsed(fs: SysfsReader, path: Path, text: str | None,
            parse: Callable[[str], frozenset[int]]) -> frozenset[int] | None:
    """``parse(text)``; None when the file was absent or did not parse (warned)."""
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        fs.warn(path, str(exc))
        return None


def _cpu_entries(fs: SysfsReader, directory: Path) -> frozenset[int]:
    return frozenset(
        int(m.group(1)) for name in fs.listdir(directory) if (m := _CPU_DIR.fullmatch(name))
    )


def _read_meminfo(fs: SysfsReader, path: Path) -> tuple[int | None, int | None]:
    text = fs.read(path)
    if text is None:
        return None, None
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = _MEMINFO_LINE.match(line.strip())
        if match:
            values[match.group(1)] = int(match.group(2))
    for key in ("MemTotal", "MemFree"):
        if key not in values:
            fs.warn(path, f"no {key} line")
    return values.get("MemTotal"), values.get("MemFree")


def _read_hugepages(fs: SysfsReader, hugepage_root: Path) -> dict[int, HugepageCount]:
    counts: dict[int, HugepageCount] = {}
    for name in fs.listdir(hugepage_root):
        match = _HUGEPAGE_DIR.fullmatch(name)
        if not match:
            fs.warn(hugepage_root / name, "unexpected entry (expected hugepages-<size>kB)")
            continue
        size_dir = hugepage_root / name
        total = fs.read_int(size_dir / "nr_hugepages")
        free = fs.read_int(size_dir / "free_hugepages")
        if total is None or free is None:
            continue  # warned; a size we cannot count is not offered
        if total < 0 or free < 0 or free > total:
            # free > total happens transiently with surplus pages; show it but say so
            fs.warn(size_dir, f"odd counts: nr_hugepages={total} free_hugepages={free}")
        counts[int(match.group(1))] = HugepageCount(total=total, free=free)
    return dict(sorted(counts.items()))


def _single_node(fs: SysfsReader) -> NumaNode:
    cpu_root = fs.root / "devices" / "system" / "cpu"
    online = fs.read(cpu_root / "online", required=False)
    cpus = _parsed(fs, cpu_root / "online", online, parse_cpulist) or _cpu_entries(fs, cpu_root)
    if not cpus:
        fs.warn(cpu_root, "no CPUs found (no online file, no cpuN entries)")
    total: int | None = None
    free: int | None = None
    if _is_live_sysfs(fs.root):
        # No per-node meminfo without NUMA; the kernel's global figures are the node's.
        memory = psutil.virtual_memory()
        total, free = memory.total // 1024, memory.free // 1024
    else:
        fs.warn(fs.root / "devices" / "system" / "node", "missing, memory size unknown")
    return NumaNode(
        id=0,
        cpus=cpus,
        memory_total_kb=total,
        memory_free_kb=free,
        hugepages=_read_hugepages(fs, fs.root / "kernel" / "mm" / "hugepages"),
    )


def _is_live_sysfs(root: Path) -> bool:
    try:
        return root.resolve() == Path("/sys").resolve()
    except OSError:
        return False
