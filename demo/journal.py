"""What a demo run has set up, written down before each step so a killed run can be undone.

The journal is a small JSON file in the private directory. Each resource is recorded
*before* it is created (a kill between the two leaves an entry for something that does
not exist, which cleanup tolerates), never after (which would leave something nobody
knows about).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.procs import ProcessId, identify
from deviceplugin.fileio import write_atomic


@dataclass
class HugepageRecord:
    sysctl: str  # the nr_hugepages file that was changed
    original: int  # its value before the demo
    target: int  # the value the demo wrote
    mount: str | None = None  # the private hugetlbfs mount point

    @property
    def reserved(self) -> int:
        return self.target - self.original


@dataclass
class Journal:
    path: Path
    owner: ProcessId
    processes: list[ProcessId] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    dpdk_dirs: list[str] = field(default_factory=list)
    hugepages: HugepageRecord | None = None
    created_netns_dir: bool = False  # /run/netns did not exist before the demo

    @classmethod
    def create(cls, path: Path) -> Journal:
        journal = cls(path, identify(os.getpid(), "numanet demo"))
        journal.save()
        return journal

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        """The journal of an earlier run, or None when there is none or it is unreadable."""
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            pages = data.get("hugepages")
            return cls(
                path=path,
                owner=ProcessId.from_json(data["owner"]),
                processes=[ProcessId.from_json(p) for p in data.get("processes", [])],
                netns=[str(n) for n in data.get("netns", [])],
                mounts=[str(m) for m in data.get("mounts", [])],
                dpdk_dirs=[str(d) for d in data.get("dpdk_dirs", [])],
                hugepages=HugepageRecord(**pages) if pages else None,
                created_netns_dir=bool(data.get("created_netns_dir", False)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self) -> None:
        data = {
            "owner": self.owner.to_json(),
            "processes": [p.to_json() for p in self.processes],
            "netns": self.netns,
            "mounts": self.mounts,
            "dpdk_dirs": self.dpdk_dirs,
            "hugepages": vars(self.hugepages) if self.hugepages else None,
            "created_netns_dir": self.created_netns_dir,
        }
        write_atomic(self.path, json.dumps(data, indent=1).encode(), mode=0o600)

    def add(self, *, process: ProcessId | None = None, netns: str | None = None,
            mount: str | None = None, dpdk_dir: str | None = None) -> None:
        if process is not None:
            self.processes.append(process)
        if netns is not None and netns not in self.netns:
            self.netns.append(netns)
        if mount is not None and mount not in self.mounts:
            self.mounts.append(mount)
        if dpdk_dir is not None and dpdk_dir not in self.dpdk_dirs:
            self.dpdk_dirs.append(dpdk_dir)
        self.save()
