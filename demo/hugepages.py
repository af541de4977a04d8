"""A few 2 MiB hugepages for the demo, given back afterwards.

The demo raises the kernel's 2 MiB page count by what it needs, mounts a private
hugetlbfs limited to that amount (DPDK's page files live there, so unmounting frees
them even after a killed run) and, at the end, puts the count back. When the kernel
cannot give the pages (no hugetlbfs, fragmented memory, a read-only /proc/sys), the
demo runs without them (``--no-huge``) and says why.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from demo.journal import HugepageRecord, Journal

PAGE_KB = 2048
SYSFS_DIR = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")


@dataclass(frozen=True)
class GivenBack:
    pages: int  # how much the count went down
    count: int | None  # nr_hugepages afterwards (None: unreadable)
    note: str = ""  # set when someone else changed the count during the demo


@dataclass(frozen=True)
class Reservation:
    mount: Path
    pages: int
    original: int


def reserve(journal: Journal, mount: Path, pages: int,
            sysfs_dir: Path = SYSFS_DIR) -> tuple[Reservation | None, str]:
    """Reserve ``pages`` and mount them at ``mount``; (None, reason) when it cannot."""
    count_file = sysfs_dir / "nr_hugepages"
    try:
        original = int(count_file.read_text())
    except (OSError, ValueError) as exc:
        return None, f"this kernel offers no 2 MiB hugepages ({count_file}: {exc})"
    target = original + pages
    journal.hugepages = HugepageRecord(str(count_file), original, target)
    journal.save()
    try:
        count_file.write_text(f"{target}\n")
        free = int((sysfs_dir / "free_hugepages").read_text())
    except (OSError, ValueError) as exc:
        release(journal)
        return None, f"cannot raise {count_file} ({exc})"
    if free < pages:
        release(journal)
        return None, (f"the kernel gave only {free} of {pages} 2 MiB pages (memory is "
                      "fragmented or short)")
    mount.mkdir(mode=0o700, exist_ok=True)
    journal.hugepages.mount = str(mount)
    journal.add(mount=str(mount))
    done = subprocess.run(
        ["mount", "-t", "hugetlbfs", "-o", f"pagesize=2M,size={pages * PAGE_KB}k,mode=0700",
         "nodev", str(mount)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        release(journal)
        return None, f"cannot mount hugetlbfs at {mount}: {done.stderr.strip()}"
    return Reservation(mount, pages, original), ""


def release(journal: Journal) -> GivenBack | None:
    """Unmount and give the pages back; None when the demo had reserved none."""
    record = journal.hugepages
    if record is None:
        return None
    if record.mount:
        unmount(Path(record.mount))
    result = give_back(record)
    journal.hugepages = None
    journal.save()
    return result


def unmount(path: Path) -> bool:
    """Unmount a mount point if it is one; True when nothing is mounted there afterwards."""
    for _ in range(50):
        if not is_mounted(path):
            return True
        subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if not is_mounted(path):
            return True
        time.sleep(0.1)  # a process that just exited may still hold a page for a moment
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
    return not is_mounted(path)


def is_mounted(path: Path) -> bool:
    return str(path) in mount_points()


def mount_points() -> set[str]:
    points = set()
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) > 4:
                points.add(fields[4].replace("\\040", " "))
    return points


def current(record: HugepageRecord) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(Path(record.sysctl).read_text())
    return None


def give_back(record: HugepageRecord) -> GivenBack:
    """Put the count back: to the original value when nobody else changed it since, else
    lower it by what the demo added (another user's change is kept)."""
    now = current(record)
    if now is None:
        return GivenBack(0, None, f"cannot read {record.sysctl}")
    want = record.original if now == record.target else max(0, now - record.reserved)
    with contextlib.suppress(OSError):
        Path(record.sysctl).write_text(f"{want}\n")
    after = current(record)
    note = "" if now == record.target else (
        f"nr_hugepages was changed by someone else during the demo ({record.target} -> {now}); "
        f"lowered it by the demo's {record.reserved} to {after}")
    return GivenBack(now - after if after is not None else 0, after, note)
