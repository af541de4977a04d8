"""The configuration as records: what the resource manager builds its pools from.

The records are made only by ``agent.config_file``, which reads and validates the YAML
file; here they are plain frozen dataclasses, so the device plugin depends on no file
format and tests can build them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deviceplugin import naming
from numa.pagesize import page_size_kb

MAX_SLOTS_PER_NODE = 4096
# Device IDs carry the NUMA node with up to 3 digits; the pool name must leave room for it.
MAX_NUMA_ID = 999

PoolKind = Literal["vhost-user", "memif", "dpdk-nic"]
POOL_KINDS = ("vhost-user", "memif", "dpdk-nic")
SOCKET_KINDS = ("vhost-user", "memif")
VSWITCHES = ("ovs", "vpp")
# Who gives a pool's slots to pods: the kubelet device plugin (extended resources) or a
# DRA driver (ResourceSlices, claims prepared by the kubelet's DRA plugin: dra/).
Frontend = Literal["deviceplugin", "dra"]
FRONTENDS = ("deviceplugin", "dra")


@dataclass(frozen=True)
class HugepagesConfig:
    page_size: str = "2Mi"
    path: Path = Path("/dev/hugepages")
    # False: socket slots stay healthy on nodes without pages of this size (applications
    # that run without hugepages, e.g. DPDK --no-huge; ``numanet demo`` when it cannot
    # reserve any).
    required: bool = True

    @property
    def page_size_kb(self) -> int:
        return page_size_kb(self.page_size)


@dataclass(frozen=True)
class OvsConfig:
    db: str = "unix:/run/openvswitch/db.sock"
    bridge: str = "br-numanet"
    # Make a slot's port at Allocate, so the pod's CNI ADD only claims it (cni/prepare.py).
    prepare_at_allocate: bool = True


@dataclass(frozen=True)
class VppConfig:
    api_socket: str = "/run/vpp/api.sock"
    api_dir: str | None = None


@dataclass(frozen=True)
class NicSelectors:
    vendors: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()
    pf_names: tuple[str, ...] = ()
    pci_addresses: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.vendors or self.devices or self.drivers or self.pf_names
                    or self.pci_addresses)


@dataclass(frozen=True)
class PoolConfig:
    name: str
    kind: PoolKind
    vswitch: str | None = None  # ovs | vpp, socket kinds only
    mode: str | None = None  # vhost-user container side: server | client
    role: str | None = None  # memif container side: slave | master
    memif_mode: str | None = None  # memif: ethernet | ip
    slots_per_node: int = 0  # socket kinds only
    numa_nodes: Literal["auto"] | tuple[int, ...] = "auto"
    selectors: NicSelectors | None = None  # dpdk-nic only
    ring_size: int | None = None
    buffer_size: int | None = None
    frontend: Frontend = "deviceplugin"

    @property
    def is_dra(self) -> bool:
        return self.frontend == "dra"

    @property
    def is_socket_kind(self) -> bool:
        return self.kind in SOCKET_KINDS

    @property
    def container_role(self) -> str | None:
        """The container side's mode (vhost-user) or role (memif), as DESIGN.md "Roles" says."""
        return self.mode if self.kind == "vhost-user" else self.role


@dataclass(frozen=True)
class Config:
    resource_prefix: str = naming.DEFAULT_PREFIX
    hugepages: HugepagesConfig = field(default_factory=HugepagesConfig)
    ovs: OvsConfig = field(default_factory=OvsConfig)
    vpp: VppConfig = field(default_factory=VppConfig)
    pools: tuple[PoolConfig, ...] = ()

    def pool(self, name: str) -> PoolConfig | None:
        return next((p for p in self.pools if p.name == name), None)

    def resource(self, pool: str) -> str:
        return naming.resource_name(self.resource_prefix, pool)

    def pools_of(self, frontend: Frontend) -> tuple[str, ...]:
        """Names of the pools served by ``frontend``, in config order."""
        return tuple(p.name for p in self.pools if p.frontend == frontend)

    def vswitches_in_use(self) -> tuple[str, ...]:
        """vSwitches referenced by at least one pool, in a stable order."""
        used = {p.vswitch for p in self.pools if p.vswitch}
        return tuple(v for v in VSWITCHES if v in used)


def default_pools() -> tuple[PoolConfig, ...]:
    """The pools of DESIGN.md's example, used when the file has no ``pools`` key."""
    return (
        PoolConfig(name="vhostuser-ovs", kind="vhost-user", vswitch="ovs", mode="server",
                   slots_per_node=32),
        PoolConfig(name="memif-vpp", kind="memif", vswitch="vpp", role="slave",
                   memif_mode="ethernet", slots_per_node=64),
        PoolConfig(name="dpdk-nic", kind="dpdk-nic",
                   selectors=NicSelectors(vendors=("8086",), devices=("1889",),
                                          drivers=("vfio-pci",))),
    )


