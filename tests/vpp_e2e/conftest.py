"""A node with VPP: the real agent in this process, the VPP stand-in server on a real unix
socket (``tests/vswitch/vpp_fake.py``: VPP 24.02's binary API, spoken to the real
vpp_papi client, restartable with an empty state like a real VPP), the kubelet stand-in
(registration, ListAndWatch, Allocate), the pod-resources stand-in, real host-local IPAM,
real network namespaces and the real ``numanet-cni`` shim.

The agent builds its VPP backend itself from ``vswitches.vpp.apiSocket`` of its config
file (``agent.vswitches.endpoint_of``), as in production; only the backend's
reconnect timings are shortened so that restarts take milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.agent_node import AgentNode, RestartableAgentHarness
from helpers.cni_shim import require_host_local
from helpers.deviceplugin import short_dir
from helpers.sysfs import HUGE_2M, NodeSpec, build_sysfs

from deviceplugin import naming
from tests.vswitch.vpp_fake import FakeVpp
from tests.vswitch.vpp_timing import FAST
from vswitch.api import VSwitch

PREFIX = "numanet.io"
MEMIF = "memif-vpp"  # container slave: VPP is master and creates the socket
MEMIF_IP = "memifip-vpp"  # memif mode ip
VHOST = "vhost-vpp"  # container client: VPP is the vhost-user server
VHOST_OVS = "vhost-ovs"  # an OVS pool beside the VPP ones (test of a VPP that is absent)

# Ring and buffer sizes: the memif pool's reach VPP; the vhost-user pool's reach only the
# container (its virtio driver sizes the rings); the ip-mode pool keeps VPP's defaults.
MEMIF_RING, MEMIF_BUFFER, VHOST_RING = 2048, 4096, 512
POOLS = f"""\
  - {{name: {MEMIF}, kind: memif, vswitch: vpp, role: slave, memifMode: ethernet, slotsPerNode: 2,
     ringSize: {MEMIF_RING}, bufferSize: {MEMIF_BUFFER}}}
  - {{name: {MEMIF_IP}, kind: memif, vswitch: vpp, role: master, memifMode: ip, slotsPerNode: 2}}
  - {{name: {VHOST}, kind: vhost-user, vswitch: vpp, mode: client, slotsPerNode: 2,
     ringSize: {VHOST_RING}}}
"""


def resource(pool: str) -> str:
    return naming.resource_name(PREFIX, pool)


def config_text(api_socket: Path, extra_pools: str = "", ovs: str = "") -> str:
    vswitches = f"  vpp: {{apiSocket: {api_socket}}}\n" + (f"  ovs: {ovs}\n" if ovs else "")
    return ("hugepages: {pageSize: 2Mi, path: @HUGEPAGES@}\n"
            f"vswitches:\n{vswitches}pools:\n{POOLS}{extra_pools}")


@dataclass
class VppNode(AgentNode):
    vpp: FakeVpp = field(kw_only=True)

    def admit(self, pod: str, pool: str) -> str:  # type: ignore[override]
        """The kubelet admits a pod asking for one device of ``pool`` (Allocate over gRPC)."""
        return super().admit(pod, resource(pool))

    def netconf(self, pod: str, pool: str, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": "1.1.0", "name": self.network, "type": "numanet",
            "resourceName": resource(pool), "deviceID": self.pods[pod],
            "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir),
                     "ranges": [[{"subnet": "10.66.0.0/24"}]]},
            "runtimeConfig": {"CNIDeviceInfoFile": str(self.cni_devinfo_dir /
                                                       f"{self.network}-{pod}-net1.json")},
        }
        conf.update(extra)
        return conf

    # -- what the stand-in VPP holds -----------------------------------------------------

    def vpp_tags(self) -> dict[str, int]:
        """device ID -> sw_if_index of every interface numanet tagged in VPP."""
        with self.vpp._lock:
            return {i.tag: i.sw_if_index for i in self.vpp.state.ifaces.values() if i.tag}

    def vpp_socket_ids(self) -> dict[int, str]:
        """memif socket ID -> file, without VPP's own default socket 0."""
        with self.vpp._lock:
            return {k: s.filename for k, s in self.vpp.state.sockets.items() if k != 0}

    def vpp_addresses(self) -> dict[str, list[str]]:
        """device ID -> the addresses VPP holds on that interface (CIDR text)."""
        with self.vpp._lock:
            return {i.tag: list(i.addresses) for i in self.vpp.state.ifaces.values() if i.tag}

    def vpp_bridge_domains(self) -> dict[str, set[int]]:
        with self.vpp._lock:
            return {bd.tag: set(bd.members) for bd in self.vpp.state.bds.values()}



def make_node(config: str | None = None, vswitches: dict[str, VSwitch] | None = None,
              start_vpp: bool = True) -> VppNode:
    """A node (not started): sysfs with one NUMA node holding 2Mi hugepages and the CPU
    the stand-in VPP's main thread runs on, the stand-in VPP, the agent harness."""
    root = short_dir("nnve-")
    cpus = frozenset(range(max(os.sched_getaffinity(0)) + 1))
    sysfs = build_sysfs(root / "sys", [NodeSpec(id=0, cpus=cpus,
                                                 hugepages={HUGE_2M: (512, 512)})])
    api_socket = root / "vpp" / "api.sock"
    api_socket.parent.mkdir()
    fake = FakeVpp(str(api_socket))
    if start_vpp:
        fake.start()
    # Only the backend's reconnect timings are shortened, so that restarts take milliseconds.
    harness = RestartableAgentHarness(root=root, sysfs=sysfs,
                                      config_text=config or config_text(api_socket),
                                      vswitches=dict(vswitches or {}),
                                      backend_options={"vpp": dict(FAST)})
    return VppNode(root=root, harness=harness, network="vpp-net", vpp=fake)


def stop_node(node: VppNode) -> None:
    if node.pod_resources is not None:
        node.pod_resources.stop()
    node.harness.cleanup()
    node.vpp.crash()


@pytest.fixture
def vpp_node() -> Iterator[VppNode]:
    """The node running: agent registered, every VPP slot Healthy, pod-resources up."""
    require_host_local()
    node = make_node()
    try:
        node.harness.start()
        node.start_pod_resources()
        for pool in (MEMIF, MEMIF_IP, VHOST):
            node.harness.wait_devices(resource(pool), lambda d: len(d) == 2
                                      and all(x.healthy for x in d.values()))
        yield node
    finally:
        stop_node(node)
    assert not node.vpp.unhandled, f"requests the stand-in VPP could not answer: " \
                                   f"{node.vpp.unhandled}"
