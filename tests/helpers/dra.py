"""Helpers for the DRA driver's tests: a config with DRA pools and a resource manager on a
fake two-node sysfs whose OVS health a test flips (a vSwitch double is enough here: the
slices follow the manager's health, whatever makes it)."""

from __future__ import annotations

from pathlib import Path

from agent.config_file import parse_config_text
from deviceplugin.health import VSwitchState
from deviceplugin.manager import ResourceManager
from helpers.sysfs import two_nodes
from numa.discover import discover

DRA_CONFIG = """\
resourcePrefix: numanet.io
hugepages: {{pageSize: 2Mi, path: {hugepages}, required: false}}
pools:
  - name: vhostuser-ovs
    kind: vhost-user
    vswitch: ovs
    mode: server
    slotsPerNode: {slots}
    frontend: dra
  - name: memif-ovs
    kind: memif
    vswitch: ovs
    slotsPerNode: 2
  - name: dpdk-nic
    kind: dpdk-nic
    selectors: {{vendors: ["8086"], drivers: [vfio-pci]}}
    frontend: dra
"""



class Node:
    """A resource manager over a fake two-node sysfs, with an OVS whose health flips."""

    def __init__(self, root: Path, slots: int = 2) -> None:
        self.sysfs = two_nodes(root / "sys")
        (root / "hugepages").mkdir()
        self.config = parse_config_text(DRA_CONFIG.format(hugepages=root / "hugepages",
                                                          slots=slots))
        self.manager = ResourceManager(root / "run")
        self.ovs_healthy = True
        self.refresh()

    def refresh(self) -> None:
        self.manager.update(self.config, discover(self.sysfs.root),
                            {"ovs": VSwitchState("ovs", self.ovs_healthy,
                                                 poll_nodes=frozenset({0, 1}))})


def allocated_claim(name: str, pod: str, pod_uid: str,
                    results: list[tuple[str, str, str]], namespace: str = "default",
                    node: str = "worker-1", driver: str = "numanet.io") -> dict:
    """A ResourceClaim as the scheduler leaves it: allocated on ``node`` and reserved for
    the pod; ``results`` are (request, pool, device) with the pool as published."""
    requests = sorted({r for r, _, _ in results})
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": {"requests": [
            {"name": r, "exactly": {"deviceClassName": driver, "allocationMode": "ExactCount",
                                    "count": sum(1 for q, _, _ in results if q == r)}}
            for r in requests]}},
        "status": {
            "allocation": {
                "devices": {"results": [{"request": r, "driver": driver, "pool": p,
                                         "device": d} for r, p, d in results]},
                "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [node]}]}]},
            },
            "reservedFor": [{"resource": "pods", "name": pod, "uid": pod_uid}],
        },
    }
