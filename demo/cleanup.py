"""Undo a demo run, and prove that nothing is left.

``recover`` runs before a demo starts: it finds what an earlier run in the same
directory left (a ``kill -9`` skips every ``finally``) from the journal and from /proc,
stops it and removes it. Processes that hold the directory but are no part of a demo are
never touched: the caller is told which they are. ``leftovers`` is the proof at the end
of a run: everything the run could have left, checked where it would be.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from demo import hugepages, netns, procs
from demo.journal import Journal
from demo.layout import POD_NAMES, Layout

# Programs a demo starts; a process running one of them inside the demo's directory is
# a leftover of a demo. Anything else holding the directory belongs to someone else.
_DEMO_PROGRAMS = ("ovsdb-server", "ovs-vswitchd-dpdk", "dpdk-testpmd", "numanet-cni")


class DemoBusy(RuntimeError):
    """The directory is in use by a running demo or by a foreign process; says what to do."""


@dataclass
class Tally:
    """What a cleanup removed, by kind, for the summary's last line."""

    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    hugepages_after: int | None = None  # nr_hugepages once the demo gave its pages back

    def add(self, kind: str, n: int = 1) -> None:
        if n:
            self.counts[kind] = self.counts.get(kind, 0) + n

    def text(self) -> str:
        return describe(self.counts)


_SINGULAR = {"processes": "process", "ports": "port", "sockets": "socket",
             "IPAM leases": "IPAM lease", "mounts": "mount", "hugepages": "hugepage",
             "DPDK runtime dirs": "DPDK runtime dir"}
_ORDER = ("processes", "ports", "sockets", "IPAM leases", "netns", "mounts", "hugepages",
          "DPDK runtime dirs")


def describe(counts: dict[str, int]) -> str:
    """``5 processes, 1 mount, ...`` in a fixed order; "nothing" when all are zero."""
    keys = [k for k in _ORDER if counts.get(k)] + [k for k in counts if k not in _ORDER]
    parts = [f"{counts[k]} {_SINGULAR.get(k, k) if counts[k] == 1 else k}"
             for k in keys if counts.get(k)]
    return ", ".join(parts) or "nothing"


def dpdk_dirs(layout: Layout, ovs_runtime_dir: Path) -> list[Path]:
    return [*layout.dpdk_runtime_dirs(), ovs_runtime_dir]


def recover(layout: Layout, ovs_runtime_dir: Path) -> Tally | None:
    """Clean what an earlier, killed run left; None when there was nothing.

    Raises DemoBusy when a demo is still running there, or when a process that is not
    part of a demo holds the directory.
    """
    base = layout.base
    journal = Journal.load(layout.journal)
    if journal is not None and journal.owner.pid != os.getpid() and journal.owner.alive():
        pid = journal.owner.pid
        raise DemoBusy(f"another numanet demo is running in {base} (pid {pid}): wait for it to "
                       f"finish, stop it with `kill {pid}` (it cleans up after itself), or "
                       "use another --dir")
    leftover_ns = [n for n in {*(journal.netns if journal else []),
                               *(layout.netns(p) for p in POD_NAMES)} if netns.exists(n)]
    if not base.exists() and not leftover_ns and not any(
            d.exists() for d in dpdk_dirs(layout, ovs_runtime_dir)):
        return None
    if base.exists() and journal is None and any(base.iterdir()):
        raise DemoBusy(f"{base} exists and is not a demo directory (it has no "
                       f"{layout.journal.name}): remove it yourself or use another --dir")
    ours, foreign = _classify(procs.holders([base, *dpdk_dirs(layout, ovs_runtime_dir)]),
                              journal)
    for name in leftover_ns:
        ours += [p for p in netns.pids(name) if p not in ours]
    if foreign:
        held = "; ".join(h.describe() for h in foreign)
        pids = " ".join(str(h.pid) for h in foreign)
        raise DemoBusy(f"{held}. It is not part of a numanet demo: stop it (kill {pids}) or "
                       "give the demo another directory with --dir")
    tally = Tally()
    for pid in ours:
        with contextlib.suppress(ProcessLookupError):
            if procs.stop(procs.identify(pid)):
                tally.add("processes")
    if journal is not None:
        for proc in journal.processes:  # e.g. a testpmd whose pod netns was deleted
            if proc.alive() and procs.stop(proc):
                tally.add("processes")
    sweep(layout, journal, ovs_runtime_dir, tally, leftover_ns)
    return tally


def sweep(layout: Layout, journal: Journal | None, ovs_runtime_dir: Path, tally: Tally,
          names: list[str] | None = None) -> None:
    """Remove netns, mounts, hugepages, DPDK runtime dirs and the directory itself."""
    for name in names if names is not None else [*(journal.netns if journal else [])]:
        if netns.delete(name):
            tally.add("netns")
    if journal is not None and journal.created_netns_dir and netns.remove_dir_if_empty():
        tally.add("mounts")
    for point in sorted(_mounts_under(layout.base), key=len, reverse=True):
        if hugepages.unmount(Path(point)):
            tally.add("mounts")
    given = hugepages.release(journal) if journal is not None else None
    if given is not None:
        tally.add("hugepages", given.pages)
        tally.hugepages_after = given.count
        if given.note:
            tally.notes.append(given.note)
    for directory in dpdk_dirs(layout, ovs_runtime_dir):
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
            tally.add("DPDK runtime dirs")
    if layout.base.exists():
        tally.add("sockets", count_sockets(layout.base))
        shutil.rmtree(layout.base, ignore_errors=True)


def leftovers(layout: Layout, ovs_runtime_dir: Path, expected_hugepages: int | None = None,
              hugepage_sysctl: str | None = None) -> list[str]:
    """Everything of this run that still exists; empty means clean."""
    left: list[str] = []
    for holder in procs.holders([layout.base, *dpdk_dirs(layout, ovs_runtime_dir)]):
        left.append(f"process {holder.describe()}")
    left += [f"mount {m}" for m in _mounts_under(layout.base)]
    left += [f"netns {n}" for n in (layout.netns(p) for p in POD_NAMES) if netns.exists(n)]
    left += [f"DPDK runtime dir {d}" for d in dpdk_dirs(layout, ovs_runtime_dir) if d.exists()]
    if layout.base.exists():
        left.append(f"directory {layout.base}")
    if expected_hugepages is not None and hugepage_sysctl:
        with contextlib.suppress(OSError, ValueError):
            now = int(Path(hugepage_sysctl).read_text())
            if now != expected_hugepages:
                left.append(f"nr_hugepages is {now}, expected {expected_hugepages}")
    return left


def _classify(holders: list[procs.Holder], journal: Journal | None) -> tuple[list[int],
                                                                             list[procs.Holder]]:
    known = {p.pid for p in journal.processes if p.alive()} if journal else set()
    ours: list[int] = []
    foreign: list[procs.Holder] = []
    for holder in holders:
        exe = os.path.basename(holder.exe)
        agent = "agent.cli" in procs.cmdline(holder.pid) or exe == "numanet"
        if holder.pid in known or exe in _DEMO_PROGRAMS or agent:
            ours.append(holder.pid)
        else:
            foreign.append(holder)
    return ours, foreign


def _mounts_under(base: Path) -> list[str]:
    root = str(base).rstrip("/") + "/"
    return [m for m in hugepages.mount_points() if m.startswith(root) or m == str(base)]


def count_sockets(base: Path) -> int:
    count = 0
    for root, dirs, files in os.walk(base):
        count += sum(1 for name in files + dirs if (Path(root) / name).is_socket())
    return count
