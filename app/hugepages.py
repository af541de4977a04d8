"""The container's hugepages: where hugetlbfs is mounted and how much it may use.

A container may see two mounts: its own hugepages volume (``emptyDir`` with medium
``HugePages-2Mi``) and the host's hugetlbfs that numanet's Allocate mounts. Either works;
its own is private to the pod. What it may use is its hugepages request (the webhook's
podnetinfo files) or its cgroup's hugetlb limit; a container that asked for none may use
none, even with a mount in sight (using it would end in SIGBUS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from app.errors import AppError

HOST_HUGEPAGES = "/dev/hugepages"  # numanet's default hugepages.path, shared by all pods
_UNITS = {"k": 1, "m": 1024, "g": 1024 * 1024}
_UNLIMITED = 1 << 62  # cgroup v1 writes "no limit" as a huge number


@dataclass(frozen=True)
class HugeMount:
    path: str
    page_kib: int

    @property
    def page_mib(self) -> float:
        return self.page_kib / 1024


def read_mounts(mounts: Path) -> list[HugeMount]:
    """hugetlbfs mounts in ``/proc/mounts`` order."""
    try:
        text = mounts.read_text()
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "hugetlbfs":
            continue
        page = 2048
        for option in fields[3].split(","):
            if option.startswith("pagesize="):
                page = _size_kib(option[len("pagesize="):]) or page
        found.append(HugeMount(_unescape(fields[1]), page))
    return found


def _size_kib(text: str) -> int | None:
    match = re.fullmatch(r"(\d+)([kKmMgG])[bB]?", text)
    return int(match.group(1)) * _UNITS[match.group(2).lower()] if match else None


def _unescape(path: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def cgroup_budget(sysfs: Path) -> dict[int, int | None]:
    """Page size KiB -> MiB the container's cgroup allows (None: no limit), v2 or v1."""
    found: dict[int, int | None] = {}
    base = sysfs / "fs" / "cgroup"
    for directory, suffix in ((base, ".max"), (base / "hugetlb", ".limit_in_bytes")):
        try:
            names = sorted(p.name for p in directory.iterdir())
        except OSError:
            continue
        for name in names:
            match = re.fullmatch(r"hugetlb\.(\d+[KMG]B)" + re.escape(suffix), name)
            page = _size_kib(match.group(1)) if match else None
            if page is None or page in found:
                continue
            try:
                value = (directory / name).read_text().strip()
            except OSError:
                continue
            if value == "max" or (value.isdigit() and int(value) >= _UNLIMITED):
                found[page] = None
            elif value.isdigit():
                found[page] = int(value) // (1024 * 1024)
    return found


@dataclass(frozen=True)
class Memory:
    """DPDK's memory: ``mount`` None means no hugepages (``--no-huge``)."""

    mount: HugeMount | None
    mib: int
    note: str | None = None  # why hugepages in sight were not taken


def choose(mounts: list[HugeMount], budget: dict[int, int | None], huge_dir: str | None,
           memory_mib: int | None) -> Memory:
    """The hugepages DPDK should use, and how many MiB of them.

    ``budget``: page KiB -> MiB allowed (None: no limit); a size missing is unknown."""
    if memory_mib is not None and memory_mib < 1:
        raise AppError(f"--memory {memory_mib}: DPDK needs some memory", "give MiB, e.g. 512")
    if huge_dir is not None:
        mount = next((m for m in mounts if m.path == huge_dir.rstrip("/") or m.path == huge_dir),
                     None)
        if mount is None:
            raise AppError(f"--huge-dir {huge_dir} is not a hugetlbfs mount of this container",
                           "mount a hugepages volume (emptyDir medium HugePages-2Mi) there, or "
                           f"use one of: {', '.join(m.path for m in mounts) or 'none mounted'}")
        return _sized(mount, budget.get(mount.page_kib, None), memory_mib)
    usable = [m for m in mounts if budget.get(m.page_kib, -1) != 0]
    if not usable:
        note = None
        if mounts:
            sizes = ", ".join(sorted({f"{m.page_kib // 1024} MiB" for m in mounts}))
            note = (f"hugetlbfs is mounted ({', '.join(m.path for m in mounts)}) but this "
                    f"container may use no hugepages of {sizes}: running without hugepages; "
                    "ask for hugepages-2Mi or hugepages-1Gi in the container's resources")
        elif any(budget.values()):
            note = ("this container may use hugepages but none is mounted: running without "
                    "them; mount a volume (emptyDir medium HugePages-2Mi) to use them")
        return Memory(None, memory_mib or 512, note)
    # A page size the container asked for first, then its own volume before the host's.
    usable.sort(key=lambda m: (budget.get(m.page_kib, -1) in (-1, None), m.path == HOST_HUGEPAGES))
    mount = usable[0]
    return _sized(mount, budget.get(mount.page_kib), memory_mib)


def _sized(mount: HugeMount, allowed: int | None, memory_mib: int | None) -> Memory:
    page_mib = max(1, mount.page_kib // 1024)
    if allowed == 0:
        raise AppError(f"this container may use no {page_mib} MiB hugepages ({mount.path})",
                       f"ask for hugepages-{_resource_size(page_mib)} in its resources")
    if allowed is not None and memory_mib is not None and memory_mib > allowed:
        raise AppError(f"--memory {memory_mib} MiB is more than the {allowed} MiB of "
                       f"{page_mib} MiB hugepages this container may use",
                       "lower --memory, or raise the container's hugepages request")
    mib = memory_mib or allowed or (1024 if page_mib >= 1024 else 512)
    if mib < page_mib:
        raise AppError(f"{mib} MiB is less than one {page_mib} MiB hugepage of {mount.path}",
                       "give --memory at least one page")
    return Memory(mount, mib)


def _resource_size(page_mib: int) -> str:
    return f"{page_mib // 1024}Gi" if page_mib >= 1024 else f"{page_mib}Mi"
