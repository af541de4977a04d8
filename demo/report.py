"""What a demo run found out, as data: the ``--json`` document and the text summary
both come from one ``Report``."""

from __future__ import annotations

import json
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.console import Step
from demo.pods import Pod


@dataclass
class Report:
    directory: str
    ok: bool = False
    error: str | None = None
    recovered: str | None = None
    interrupted: bool = False
    hugepages: dict[str, Any] = field(default_factory=dict)
    ovs: dict[str, Any] = field(default_factory=dict)
    numa: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    traffic: dict[str, Any] | None = None
    steps: list[Step] = field(default_factory=list)
    cleaned: dict[str, int] = field(default_factory=dict)
    cleanup_notes: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def numa_rows(status_file: Path, pmd_cpus: Set[int]) -> list[dict[str, Any]]:
    """Per NUMA node: CPUs, 2 MiB pages, whether OVS polls there, and each pool's slots
    used/free as the running agent reports them (its status file)."""
    import numa

    try:
        status = json.loads(status_file.read_text())
    except (OSError, ValueError):
        status = {"pools": []}
    rows = []
    for node in numa.discover("/sys", nics=False).nodes:
        pages = node.hugepage(2048)
        pools = [{"pool": pool["name"], "used": row["used"], "free": row["free"],
                  "total": row["total"]}
                 for pool in status.get("pools", []) for row in pool.get("nodes", [])
                 if row.get("numa") == node.id]
        rows.append({"node": node.id, "cpus": numa.format_cpulist(node.cpus),
                     "ovsPmd": bool(set(pmd_cpus) & set(node.cpus)),
                     "hugepages2Mi": {"free": pages.free, "total": pages.total},
                     "pools": pools})
    return rows


def pod_row(pod: Pod) -> dict[str, Any]:
    iface = pod.interface
    assert iface is not None, f"{pod.ref} has no interface"
    return {"pod": pod.ref, "deviceID": pod.device_id, "resource": pod.resource,
            "kind": iface.kind, "role": iface.role, "socket": str(iface.socket),
            "containerSocket": iface.container_socket, "mac": iface.mac,
            "ips": list(iface.ips), "numaNode": iface.numa_node, "queues": iface.queues,
            "config": str(iface.config_path), "netns": pod.netns}
