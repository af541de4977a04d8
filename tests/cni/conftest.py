"""The CNI test bed: real OVS-DPDK, real host-local, real netns, the real shim executable.

Only the kubelet is a stand-in (its pod-resources API). Slots come from ``StaticSlots``,
a small real ``SlotLookup`` built from ``deviceplugin.naming`` (the resource manager
advertises no socket slots on a machine without hugepages); ``CniBed.allocate`` plays
the kubelet's Allocate: it records the allocation for pod-resources and creates the slot
directory as the device plugin does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.cni_shim import CNI_BIN, CniCall, leases, require_host_local, run_shim
from helpers.netns import NetNS, netns
from helpers.ovs import private_ovs, rows, short_tmpdir, unique_bridge

from cni.context import Context
from cni.service import CniService, start_agent_service
from demo.kubelet_standin.podresources import PodAllocation, PodResourcesStandIn
from demo.private_ovs import PrivateOvs
from deviceplugin import naming
from deviceplugin.slots import Slot
from deviceplugin.state import AllocationStore
from vswitch.api import VSwitchError
from vswitch.ovs.backend import OvsVSwitch
from vswitch.vpp.backend import VppVSwitch

__all__ = ["private_ovs"]

POOLS = {
    # pool -> (kind, container role, memif mode, vSwitch)
    "vhostuser-ovs": ("vhost-user", "server", None, "ovs"),
    "vhostc-ovs": ("vhost-user", "client", None, "ovs"),
    "memif-ovs": ("memif", "slave", "ethernet", "ovs"),
    # A pool of a vSwitch the bed does not run unless a test adds one (there is no VPP).
    "memif-vpp": ("memif", "slave", "ethernet", "vpp"),
    # Pools with ringSize / bufferSize (POOL_SIZES).
    "memifr-ovs": ("memif", "slave", "ethernet", "ovs"),
    "vhostr-ovs": ("vhost-user", "server", None, "ovs"),
}
# pool -> (ringSize, bufferSize) as config.yaml would give them
POOL_SIZES: dict[str, tuple[int | None, int | None]] = {
    "memifr-ovs": (512, 4096),
    "vhostr-ovs": (256, None),
}
SLOTS_PER_POOL = 32
NIC_POOL = "dpdk-nic"
NICS = ("0000:3b:02.0", "0000:3b:02.1")  # VFs as a dpdk-nic pool would list them


class StaticSlots:
    """A fixed set of slots on NUMA node 0, named and placed by ``deviceplugin.naming``."""

    def __init__(self, run_dir: Path, prefix: str = naming.DEFAULT_PREFIX) -> None:
        self.run_dir = run_dir
        self.prefix = prefix

    def device_id(self, pool: str, index: int) -> str:
        return naming.slot_device_id(pool, 0, index)

    def slot(self, device_id: str) -> Slot | None:
        if device_id in NICS:
            return Slot(device_id=device_id, pool=NIC_POOL,
                        resource=naming.resource_name(self.prefix, NIC_POOL), kind="dpdk-nic",
                        numa_node=0, pci_address=device_id, pf_pci_address="0000:3b:00.0")
        try:
            pool, numa_node, index = naming.parse_slot_id(device_id)
        except naming.InvalidName:
            return None
        if pool not in POOLS or numa_node != 0 or index >= SLOTS_PER_POOL:
            return None
        kind, role, memif_mode, vswitch = POOLS[pool]
        ring_size, buffer_size = POOL_SIZES.get(pool, (None, None))
        return Slot(device_id=device_id, pool=pool,
                    resource=naming.resource_name(self.prefix, pool),
                    kind=kind, numa_node=0, index=index, vswitch=vswitch,  # type: ignore[arg-type]
                    container_role=role, memif_mode=memif_mode,
                    host_dir=naming.slot_dir(self.run_dir, device_id),
                    container_dir=naming.container_slot_dir(pool, device_id),
                    ring_size=ring_size, buffer_size=buffer_size)

    def pool_resource(self, pool: str) -> str | None:
        known = pool in POOLS or pool == NIC_POOL
        return naming.resource_name(self.prefix, pool) if known else None

    def pool_vswitch(self, pool: str) -> str | None:
        return POOLS[pool][3] if pool in POOLS else None


@dataclass
class CniBed:
    ovs: PrivateOvs
    switch: OvsVSwitch
    bridge: str
    base: Path  # short, for socket paths
    run_dir: Path
    socket: Path
    ipam_dir: Path
    devinfo_root: Path
    kubelet: PodResourcesStandIn
    slots: StaticSlots
    context: Context
    service: CniService
    allocated: AllocationStore | None = None
    allocations: list[PodAllocation] = field(default_factory=list)
    network: str = "numanet-test"

    # -- the kubelet's part ------------------------------------------------------------

    def allocate(self, namespace: str, pod: str, device_id: str, container: str = "app") -> Slot:
        slot = self.slots.slot(device_id)
        assert slot is not None
        if slot.host_dir is not None:
            slot.host_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.allocations.append(PodAllocation(namespace, pod, container, slot.resource,
                                              (device_id,), (0,)))
        if self.allocated is not None:
            self.allocated.record(device_id, slot.pool, slot.resource, 0)
        return slot

    def forget_pod(self, namespace: str, pod: str) -> None:
        self.allocations[:] = [a for a in self.allocations
                               if (a.namespace, a.pod) != (namespace, pod)]

    # -- calling the plugin as a runtime does ----------------------------------------------

    def netconf(self, device_id: str | None = None, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": "1.1.0",
            "name": self.network,
            "type": "numanet",
            "bridge": self.bridge,
            "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir),
                     "ranges": [[{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}]],
                     "routes": [{"dst": "10.78.0.0/16"}]},
        }
        if device_id is not None:
            conf["deviceID"] = device_id
        conf.update(extra)
        return {k: v for k, v in conf.items() if v is not None}

    def env(self, command: str, container_id: str = "", ifname: str = "net1",
            netns_path: str = "", pod: tuple[str, str] | None = ("default", "pod-a"),
            **extra: str) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "NUMANET_CNI_SOCKET": str(self.socket), "CNI_COMMAND": command,
               "CNI_PATH": CNI_BIN}
        if container_id:
            env["CNI_CONTAINERID"] = container_id
        if ifname:
            env["CNI_IFNAME"] = ifname
        if netns_path:
            env["CNI_NETNS"] = netns_path
        if pod is not None:
            env["CNI_ARGS"] = (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod[0]};K8S_POD_NAME={pod[1]};"
                               f"K8S_POD_INFRA_CONTAINER_ID={container_id or 'x'}")
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def run(self, env: dict[str, str], stdin: bytes | dict[str, Any]) -> CniCall:
        return run_shim(env, stdin)

    def cni(self, command: str, conf: bytes | dict[str, Any], container_id: str = "",
            ifname: str = "net1", netns_path: str = "",
            pod: tuple[str, str] | None = ("default", "pod-a"), **extra: str) -> CniCall:
        return self.run(self.env(command, container_id, ifname, netns_path, pod, **extra), conf)

    # -- what is left on the node -----------------------------------------------------------

    def ports(self) -> list[dict[str, Any]]:
        """numanet's Port rows on this bed's bridge."""
        names = set(self.bridge_ports())
        return [p for p in rows(self.ovs, "Port", "external_ids:numanet-owner=numanet")
                if p["name"] in names]

    def bridge_ports(self) -> list[str]:
        bridges = rows(self.ovs, "Bridge", f"name={self.bridge}")
        if not bridges:
            return []
        uuids = bridges[0]["ports"]
        uuids = uuids if isinstance(uuids, list) else [uuids]
        return [p["name"] for p in rows(self.ovs, "Port") if p["_uuid"] in uuids]

    def leases(self) -> list[str]:
        return leases(self.ipam_dir, self.network)

    def container_files(self) -> list[Path]:
        return sorted(self.run_dir.glob(f"s/*/{naming.CONTAINER_CONFIG_NAME}"))

    def records(self) -> list[Path]:
        return sorted((self.run_dir / "cni").glob("*.json"))

    def devinfo_files(self) -> list[Path]:
        return sorted(p for p in self.devinfo_root.rglob("*.json"))

    def assert_clean(self) -> None:
        """Nothing of numanet left: no port, lease, container file, record, devinfo file."""
        assert self.ports() == []
        assert self.leases() == []
        assert self.container_files() == []
        assert self.records() == []
        assert self.devinfo_files() == []


@pytest.fixture
def cni_bed(private_ovs: PrivateOvs, tmp_path: Path) -> Iterator[CniBed]:  # noqa: F811
    require_host_local()
    base = Path(short_tmpdir("nncni-"))
    run_dir = base / "run"
    run_dir.mkdir()
    kubelet_dir = base / "kubelet"
    devinfo_root = tmp_path / "devinfo"
    (devinfo_root / "cni").mkdir(parents=True)
    bridge = unique_bridge("c")
    switch = OvsVSwitch(private_ovs.db, bridge, timeout=10.0)
    switch.connect()
    allocations: list[PodAllocation] = []
    kubelet = PodResourcesStandIn(kubelet_dir / "pod-resources" / "kubelet.sock",
                                  lambda: list(allocations)).start()
    slots = StaticSlots(run_dir)
    allocated = AllocationStore(run_dir)
    # The agent's own entry point, as agent.agent starts it.
    service = start_agent_service(slots=slots, vswitches=lambda: {"ovs": switch},
                                  run_dir=run_dir, pod_resources_socket=kubelet.socket,
                                  devinfo_root=devinfo_root, allocations=allocated)
    context = service.context
    bed = CniBed(ovs=private_ovs, switch=switch, bridge=bridge, base=base, run_dir=run_dir,
                 socket=service.socket_path, ipam_dir=tmp_path / "ipam",
                 devinfo_root=devinfo_root, kubelet=kubelet, slots=slots, context=context,
                 service=service, allocated=allocated, allocations=allocations)
    try:
        yield bed
    finally:
        service.stop()
        kubelet.stop()
        try:
            for plugged in switch.ports():
                if plugged.network == bridge:
                    switch.unplug(plugged.device_id)
        except VSwitchError:
            pass
        switch.close()
        private_ovs.vsctl("--if-exists", "del-br", bridge, wait=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def absent_vpp(cni_bed: CniBed) -> Iterator[VppVSwitch]:
    """The bed's agent also runs a VPP backend whose VPP is absent (the real client,
    pointed at a socket nothing listens on), as on a node whose VPP is down."""
    vpp = VppVSwitch(f"{cni_bed.base}/vpp-api.sock")
    assert not vpp.health().healthy
    cni_bed.context.vswitches = {"ovs": cni_bed.switch, "vpp": vpp}
    try:
        yield vpp
    finally:
        vpp.close()


@pytest.fixture
def pod_netns() -> Iterator[NetNS]:
    with netns("nncni") as ns:
        yield ns
