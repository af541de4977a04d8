"""``numanet status``: pools, slots used/free per NUMA node and vSwitch health.

Reads ``<run-dir>/status.json``, which the running agent rewrites whenever something
changes (see ``status_file``); no network is involved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agent.status_file import status_path
from deviceplugin import naming


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, default=naming.DEFAULT_RUN_DIR,
                        help="the agent's run directory (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the status document as JSON")


def run(args: argparse.Namespace) -> int:
    path = status_path(args.run_dir)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        print(f"numanet status: no running agent: {path} does not exist (start `numanet agent`, "
              "or pass the agent's --run-dir)", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"numanet status: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    alive = _pid_alive(document.get("pid"))
    if args.json:
        print(json.dumps({**document, "agentRunning": alive}, indent=2))
    else:
        print(render(document, alive))
    return 0 if alive else 1


def render(document: dict[str, Any], alive: bool = True) -> str:
    lines = []
    age = max(0.0, time.time() - float(document.get("updatedAt", 0)))
    state = "running" if alive else "NOT RUNNING (status left by a stopped agent)"
    lines.append(f"numanet agent pid {document.get('pid')} {state}; config "
                 f"{document.get('config')}; last change {age:.0f} s ago")
    lines.append("")
    lines.append("vSwitches:")
    if not document.get("vswitches"):
        lines.append("  (none used by the pools)")
    for vs in document.get("vswitches", []):
        nodes = vs.get("pollNodes")
        where = f"polls on NUMA {','.join(map(str, nodes))}" if nodes is not None \
            else "polling nodes unknown"
        health = "healthy" if vs.get("healthy") else f"UNHEALTHY: {vs.get('reason')}"
        lines.append(f"  {vs.get('name'):<5} {health}" + (f"; {where}" if vs.get("healthy")
                                                          else ""))
    lines.append("")
    header = ("POOL", "RESOURCE", "NUMA", "TOTAL", "HEALTHY", "USED", "FREE", "REGISTERED")
    rows: list[tuple[str, ...]] = [header]
    notes = []
    for pool in document.get("pools", []):
        nodes = pool.get("nodes") or [{"numa": None, "total": 0, "healthy": 0, "used": 0,
                                       "free": 0}]
        for i, node in enumerate(nodes):
            numa = "-" if node.get("numa") is None else str(node["numa"])
            rows.append((pool["name"] if i == 0 else "", pool["resource"] if i == 0 else "",
                         numa, str(node["total"]), str(node["healthy"]), str(node["used"]),
                         str(node["free"]),
                         ("yes" if pool.get("registered") else "NO") if i == 0 else ""))
        for reason, count in sorted(pool.get("unhealthy", {}).items()):
            notes.append(f"  {pool['name']}: {count} unhealthy: {reason}")
        if pool.get("note"):
            notes.append(f"  {pool['name']}: {pool['note']}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                         strict=True)).rstrip())
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(notes)
    return "\n".join(lines)


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
