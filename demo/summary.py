"""The demo's summary: a few lines of text for a person, or the same facts as JSON.

The text ends with the line that says what was cleaned and whether anything is left;
that line is the proof the issue asks for, so it is always last.
"""

from __future__ import annotations

from typing import Any

from demo.cleanup import describe
from demo.report import Report

_STEP_NAMES = {"preflight": "preflight", "hugepages": "hugepages", "OVS-DPDK": "OVS",
               "agent": "agent", "kubelet": "kubelet", "Multus": "CNI", "pods' apps": "testpmd",
               "traffic": "traffic", "teardown": "teardown"}


def cleaned_line(report: Report) -> str:
    what = describe(report.cleaned)
    pages = report.hugepages
    if pages.get("restoredTo") is not None:
        what += f" (nr_hugepages back to {pages['restoredTo']})"
    if report.left:
        return f"cleaned: {what}; LEFT BEHIND: {'; '.join(report.left)}"
    return (f"cleaned: {what}; {report.directory} removed. Checked processes, mounts, netns, "
            "OVS ports, IPAM leases, files: nothing left")


def render(report: Report) -> str:
    lines: list[str] = [""]
    if report.numa:
        for node in report.numa:
            pages = node["hugepages2Mi"]
            pmd = "   OVS PMD polls here" if node["ovsPmd"] else ""
            lines.append(f"NUMA node {node['node']}   CPUs {node['cpus']}   2Mi hugepages "
                         f"{pages['free']}/{pages['total']} free{pmd}")
            for pool in node["pools"]:
                lines.append(f"   {pool['pool']:<15} slots {pool['used']} used, "
                             f"{pool['free']} free of {pool['total']}")
    for pod in report.pods:
        role = "mode" if pod["kind"] == "vhost-user" else "role"
        queues = f", {pod['queues']} queue pairs" if pod.get("queues") else ""
        lines.append(f"{pod['pod']:<11} {pod['deviceID']} ({pod['kind']}, container {role} "
                     f"{pod['role']}{queues}) NUMA {pod['numaNode']}")
        lines.append(f"{'':<11} socket {pod['socket']}")
        lines.append(f"{'':<11} MAC {pod['mac']}   IP {', '.join(pod['ips'])}")
    traffic = report.traffic
    if traffic:
        ab, ba = traffic["aToB"], traffic["bToA"]
        lines.append(f"traffic {traffic['seconds']:.1f} s through OVS: "
                     f"{_short(ab['from'])} -> {_short(ab['to'])} {ab['pps']:,} pps, "
                     f"{_short(ba['from'])} -> {_short(ba['to'])} {ba['pps']:,} pps")
    if report.steps:
        total = sum(s.seconds for s in report.steps)
        times = ", ".join(f"{_STEP_NAMES.get(s.name, s.name)} {s.seconds:.1f}"
                          for s in report.steps)
        lines.append(f"time (s): {times}; total {total:.1f}")
    if report.interrupted:
        lines.append(f"STOPPED: {report.error}")
    elif report.error:
        lines.append(f"FAILED: {report.error}")
    for note in report.cleanup_notes:
        lines.append(f"note: {note}")
    lines.append(cleaned_line(report))
    return "\n".join(lines)


def to_json(report: Report) -> dict[str, Any]:
    return {
        "ok": report.ok and not report.left,
        "error": report.error,
        "interrupted": report.interrupted,
        "dir": report.directory,
        "recoveredLeftovers": report.recovered,
        "hugepages": report.hugepages,
        "ovs": report.ovs,
        "numa": report.numa,
        "pods": report.pods,
        "traffic": report.traffic,
        "steps": [{"name": s.name, "seconds": round(s.seconds, 3), "detail": s.detail,
                   "ok": s.ok} for s in report.steps],
        "cleanup": {"cleaned": report.cleaned, "left": report.left,
                    "notes": report.cleanup_notes, "line": cleaned_line(report)},
    }


def _short(pod_ref: str) -> str:
    return pod_ref.split("/", 1)[-1]
