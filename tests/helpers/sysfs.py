"""Synthetic sysfs trees for tests, laid out like the kernel's (symlinks included).

    fake = two_nodes(tmp_path)              # a preset; or build_sysfs(tmp_path, [NodeSpec(...)])
    topo = numa.discover(fake)              # FakeSysfs is os.PathLike (its root)
    fake.bind("0000:3b:01.0", "iavf", netdev="ens1f0v0")   # simulate a driver rebind

What gets written (paths relative to the root)::

    devices/system/node/{online,possible,has_cpu}
    devices/system/node/nodeN/{cpulist,cpumap,meminfo,cpuK -> ../../cpu/cpuK}
    devices/system/node/nodeN/hugepages/hugepages-<size>kB/{nr,free,surplus}_hugepages
    devices/system/cpu/{online,possible,present}, cpuK/{online,topology/...,nodeN -> ...}
    kernel/mm/hugepages/hugepages-<size>kB/{nr,free,surplus,resv}_hugepages  (sum of nodes)
    devices/pci0000:BB/<addr>/{class,vendor,device,numa_node,subsystem_*,...}
        driver -> ../../../bus/pci/drivers/<name>       (when bound)
        iommu_group -> ../../../kernel/iommu_groups/<n> (when given)
        net/<ifname>/{address,operstate}                (kernel-bound with a netdev)
        virtio<k>/net/<ifname>/                         (virtio layout instead)
        sriov_totalvfs, sriov_numvfs, virtfn<i> -> ../<vf>   (PF)
        physfn -> ../<pf>                                    (VF)
    bus/pci/devices/<addr> -> ../../../devices/pci0000:BB/<addr>
    bus/pci/drivers/<name>/<addr> -> device
    kernel/iommu_groups/<n>/devices/<addr> -> device (+ name "vfio-noiommu" for noiommu)
    class/net/<ifname> -> device/net/<ifname>
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from numa import format_cpulist

GiB_KB = 1024 * 1024
HUGE_2M = 2048
HUGE_1G = 1048576
DPDK_DRIVERS = frozenset({"vfio-pci", "uio_pci_generic", "igb_uio"})


@dataclass(frozen=True)
class NodeSpec:
    id: int
    cpus: frozenset[int]
    mem_total_kb: int = 16 * GiB_KB
    mem_free_kb: int = 12 * GiB_KB
    # page size KiB -> (total, free)
    hugepages: Mapping[int, tuple[int, int]] = field(
        default_factory=lambda: {HUGE_2M: (0, 0), HUGE_1G: (0, 0)}
    )


@dataclass(frozen=True)
class PciSpec:
    """One PCI function. ``numa_node`` may be a string to write something malformed."""

    address: str
    numa_node: int | str = 0
    vendor: str = "8086"
    device: str = "1593"
    driver: str | None = "ice"
    netdev: str | None = None
    iommu_group: int | None = None
    pci_class: str = "0x020000"
    totalvfs: int = 0
    vfs: tuple[PciSpec, ...] = ()
    physfn: str | None = None  # filled in for VFs by the builder
    virtio: bool = False  # netdev under virtio<k>/net/ as virtio-pci does
    noiommu: bool = False  # IOMMU group made by vfio's no-IOMMU mode

    @property
    def dpdk_ready(self) -> bool:
        if self.driver == "vfio-pci":
            return self.iommu_group is not None
        return self.driver in DPDK_DRIVERS

    @property
    def is_nic(self) -> bool:
        return self.pci_class.lower().removeprefix("0x").startswith("02")


@dataclass
class FakeSysfs:
    """A built tree: its root plus the specs it was built from (VFs flattened into ``pci``)."""

    root: Path
    nodes: tuple[NodeSpec, ...]
    pci: list[PciSpec]
    numa: bool = True

    def __fspath__(self) -> str:
        return str(self.root)

    @property
    def nics(self) -> list[PciSpec]:
        return [spec for spec in self.pci if spec.is_nic]

    def spec(self, address: str) -> PciSpec:
        for spec in self.pci:
            if spec.address == address:
                return spec
        raise KeyError(address)

    def node_spec(self, node_id: int) -> NodeSpec:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def path(self, relative: str) -> Path:
        return self.root / relative

    def device_dir(self, address: str) -> Path:
        return _device_dir(self.root, address)

    def add_pci(self, spec: PciSpec) -> None:
        """Hot-add a function (and its VFs)."""
        for added in _write_pci(self.root, spec):
            self.pci.append(added)

    def remove_pci(self, address: str) -> None:
        """Hot-remove a function: its directory and every link to it."""
        spec = self.spec(address)
        self._unlink_driver(spec)
        if spec.iommu_group is not None:
            _unlink(self.root / "kernel" / "iommu_groups" / str(spec.iommu_group) / "devices"
                    / address)
        if spec.netdev:
            _unlink(self.root / "class" / "net" / spec.netdev)
        _unlink(self.root / "bus" / "pci" / "devices" / address)
        shutil.rmtree(self.device_dir(address))
        self.pci = [s for s in self.pci if s.address != address]

    def bind(self, address: str, driver: str | None, netdev: str | None = None) -> None:
        """Rebind to ``driver`` (None: unbind); a kernel driver may bring a netdev."""
        spec = self.spec(address)
        self._unlink_driver(spec)
        if spec.netdev:
            _unlink(self.root / "class" / "net" / spec.netdev)
            shutil.rmtree(_netdev_parent(self.root, spec) / spec.netdev, ignore_errors=True)
        new = replace(spec, driver=driver, netdev=netdev)
        _check_spec(new)
        _write_driver(self.root, new)
        _write_netdev(self.root, new)
        self.pci = [new if s.address == address else s for s in self.pci]

    def set_hugepages(self, node_id: int, size_kb: int, total: int, free: int) -> None:
        base = self.root / "devices" / "system" / "node" / f"node{node_id}" / "hugepages"
        size_dir = base / f"hugepages-{size_kb}kB"
        size_dir.mkdir(parents=True, exist_ok=True)
        _write(size_dir / "nr_hugepages", total)
        _write(size_dir / "free_hugepages", free)
        node = self.node_spec(node_id)
        pages = dict(node.hugepages)
        pages[size_kb] = (total, free)
        self.nodes = tuple(
            replace(n, hugepages=pages) if n.id == node_id else n for n in self.nodes
        )
        _write_global_hugepages(self.root, self.nodes)

    def _unlink_driver(self, spec: PciSpec) -> None:
        _unlink(self.device_dir(spec.address) / "driver")
        if spec.driver:
            _unlink(self.root / "bus" / "pci" / "drivers" / spec.driver / spec.address)


def build_sysfs(
    root: Path,
    nodes: int | Sequence[NodeSpec],
    pci: Iterable[PciSpec] = (),
    *,
    cpus_per_node: int = 2,
    numa: bool = True,
) -> FakeSysfs:
    """Write a sysfs tree under ``root`` (created if needed).

    ``nodes`` is a count (node k gets CPUs k*cpus_per_node ... and default memory) or
    explicit specs. ``numa=False`` writes a kernel without NUMA: no devices/system/node,
    CPUs only in devices/system/cpu, hugepages only in kernel/mm/hugepages.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(nodes, int):
        specs = tuple(
            NodeSpec(id=k, cpus=frozenset(range(k * cpus_per_node, (k + 1) * cpus_per_node)))
            for k in range(nodes)
        )
    else:
        specs = tuple(nodes)
    _write_cpus(root, specs, numa)
    if numa:
        _write_nodes(root, specs)
    _write_global_hugepages(root, specs)
    written: list[PciSpec] = []
    (root / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)
    (root / "kernel" / "iommu_groups").mkdir(parents=True, exist_ok=True)
    (root / "class" / "net").mkdir(parents=True, exist_ok=True)
    for spec in pci:
        written.extend(_write_pci(root, spec))
    return FakeSysfs(root=root, nodes=specs, pci=written, numa=numa)


# ---- presets --------------------------------------------------------------------------

def _virtio_nic(address: str = "0000:00:03.0", netdev: str = "eth0") -> PciSpec:
    # Firmware of most VMs gives no NUMA affinity: numa_node is -1.
    return PciSpec(address=address, numa_node=-1, vendor="1af4", device="1041",
                   driver="virtio-pci", netdev=netdev, virtio=True)


def _e810(address: str, node: int, netdev: str, group: int, vf_addresses: Sequence[str],
          kernel_vfs: int = 0) -> PciSpec:
    """Intel E810 PF on ice with VFs (8086:1889) on vfio-pci; the last ``kernel_vfs`` on iavf."""
    vfs = []
    for i, vf in enumerate(vf_addresses):
        on_kernel = i >= len(vf_addresses) - kernel_vfs
        vfs.append(PciSpec(
            address=vf, numa_node=node, device="1889",
            driver="iavf" if on_kernel else "vfio-pci",
            netdev=f"{netdev}v{i}" if on_kernel else None,
            iommu_group=group + 1 + i,
        ))
    return PciSpec(address=address, numa_node=node, device="1593", driver="ice",
                   netdev=netdev, iommu_group=group, totalvfs=8, vfs=tuple(vfs))


def one_node(root: Path) -> FakeSysfs:
    """Node 0 (CPUs 0-3), 2M and 1G hugepages, an E810 with two vfio VFs, a virtio NIC (-1)."""
    node = NodeSpec(id=0, cpus=frozenset(range(4)), mem_total_kb=8 * GiB_KB,
                    mem_free_kb=6 * GiB_KB, hugepages={HUGE_2M: (512, 256), HUGE_1G: (2, 2)})
    return build_sysfs(root, [node], [
        _virtio_nic(),
        _e810("0000:01:00.0", 0, "enp1s0f0", 10, ["0000:01:01.0", "0000:01:01.1"]),
    ])


def two_nodes(root: Path) -> FakeSysfs:
    """Two sockets with hyperthreads, NICs on both, one NIC with unknown node, a SATA disk.

    node 0: CPUs 0-3,8-11; 2M 1000/1024 free, 1G 2/4 free; E810 ens1f0 (ice) with VFs
            0000:3b:01.0, 0000:3b:01.1 on vfio-pci and 0000:3b:01.2 on iavf (ens1f0v2)
    node 1: CPUs 4-7,12-15; 2M 512/512, 1G 4/4; ConnectX-5 ens2f0 (mlx5_core) and an
            X710 PF 0000:af:00.1 on vfio-pci
    unknown: virtio eth0 (numa_node -1)
    """
    nodes = [
        NodeSpec(id=0, cpus=frozenset([0, 1, 2, 3, 8, 9, 10, 11]), mem_total_kb=32 * GiB_KB,
                 mem_free_kb=20 * GiB_KB, hugepages={HUGE_2M: (1024, 1000), HUGE_1G: (4, 2)}),
        NodeSpec(id=1, cpus=frozenset([4, 5, 6, 7, 12, 13, 14, 15]), mem_total_kb=32 * GiB_KB,
                 mem_free_kb=30 * GiB_KB, hugepages={HUGE_2M: (512, 512), HUGE_1G: (4, 4)}),
    ]
    return build_sysfs(root, nodes, [
        _virtio_nic(),
        PciSpec(address="0000:00:1f.2", numa_node=0, vendor="8086", device="a182",
                driver="ahci", pci_class="0x010601", iommu_group=5),
        _e810("0000:3b:00.0", 0, "ens1f0", 30,
              ["0000:3b:01.0", "0000:3b:01.1", "0000:3b:01.2"], kernel_vfs=1),
        PciSpec(address="0000:af:00.0", numa_node=1, vendor="15b3", device="1017",
                driver="mlx5_core", netdev="ens2f0", iommu_group=60),
        PciSpec(address="0000:af:00.1", numa_node=1, vendor="8086", device="1572",
                driver="vfio-pci", iommu_group=61),
    ])


def four_nodes(root: Path) -> FakeSysfs:
    """Four nodes of 4 CPUs; 2M pages everywhere, 1G only on nodes 0 and 2; E810s on 0 and 2."""
    hugepages = [
        {HUGE_2M: (256, 200), HUGE_1G: (2, 1)},
        {HUGE_2M: (256, 256), HUGE_1G: (0, 0)},
        {HUGE_2M: (512, 100), HUGE_1G: (4, 4)},
        {HUGE_2M: (256, 0), HUGE_1G: (0, 0)},
    ]
    nodes = [
        NodeSpec(id=k, cpus=frozenset(range(4 * k, 4 * k + 4)), mem_total_kb=16 * GiB_KB,
                 mem_free_kb=(8 + k) * GiB_KB, hugepages=hugepages[k])
        for k in range(4)
    ]
    return build_sysfs(root, nodes, [
        _virtio_nic(),
        _e810("0000:17:00.0", 0, "ens1f0", 20, ["0000:17:01.0", "0000:17:01.1"]),
        _e810("0000:98:00.0", 2, "ens3f0", 40, ["0000:98:01.0"]),
    ])


# ---- writers --------------------------------------------------------------------------

def _write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    _unlink(link)
    link.symlink_to(os.path.relpath(target, link.parent))


def _unlink(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()


def _cpumap(cpus: Iterable[int], ncpus: int) -> str:
    """Kernel style: 32-bit words, most significant first, comma separated."""
    value = 0
    for cpu in cpus:
        value |= 1 << cpu
    words = max(1, (ncpus + 31) // 32)
    return ",".join(f"{(value >> (32 * w)) & 0xFFFFFFFF:08x}" for w in reversed(range(words)))


def _write_cpus(root: Path, nodes: Sequence[NodeSpec], numa: bool) -> None:
    cpu_root = root / "devices" / "system" / "cpu"
    all_cpus = sorted(set().union(*(n.cpus for n in nodes)) if nodes else set())
    for name in ("online", "present", "possible"):
        _write(cpu_root / name, format_cpulist(all_cpus))
    for node in nodes:
        for cpu in node.cpus:
            cpu_dir = cpu_root / f"cpu{cpu}"
            _write(cpu_dir / "online", 1)
            _write(cpu_dir / "topology" / "physical_package_id", node.id)
            _write(cpu_dir / "topology" / "core_id", cpu)
            if numa:
                _link(cpu_dir / f"node{node.id}",
                      root / "devices" / "system" / "node" / f"node{node.id}")


def _write_nodes(root: Path, nodes: Sequence[NodeSpec]) -> None:
    node_root = root / "devices" / "system" / "node"
    ids = [n.id for n in nodes]
    _write(node_root / "online", format_cpulist(ids))
    _write(node_root / "possible", format_cpulist(ids))
    _write(node_root / "has_cpu", format_cpulist(n.id for n in nodes if n.cpus))
    ncpus = max((max(n.cpus) + 1 for n in nodes if n.cpus), default=1)
    for node in nodes:
        node_dir = node_root / f"node{node.id}"
        _write(node_dir / "cpulist", format_cpulist(node.cpus))
        _write(node_dir / "cpumap", _cpumap(node.cpus, ncpus))
        used = node.mem_total_kb - node.mem_free_kb
        _write(node_dir / "meminfo", "\n".join([
            f"Node {node.id} MemTotal:       {node.mem_total_kb:>8} kB",
            f"Node {node.id} MemFree:        {node.mem_free_kb:>8} kB",
            f"Node {node.id} MemUsed:        {used:>8} kB",
            f"Node {node.id} HugePages_Total: {node.hugepages.get(HUGE_2M, (0, 0))[0]:>7}",
        ]))
        for cpu in node.cpus:
            _link(node_dir / f"cpu{cpu}", root / "devices" / "system" / "cpu" / f"cpu{cpu}")
        for size_kb, (total, free) in node.hugepages.items():
            size_dir = node_dir / "hugepages" / f"hugepages-{size_kb}kB"
            _write(size_dir / "nr_hugepages", total)
            _write(size_dir / "free_hugepages", free)
            _write(size_dir / "surplus_hugepages", 0)


def _write_global_hugepages(root: Path, nodes: Sequence[NodeSpec]) -> None:
    sums: dict[int, list[int]] = {}
    for node in nodes:
        for size_kb, (total, free) in node.hugepages.items():
            acc = sums.setdefault(size_kb, [0, 0])
            acc[0] += total
            acc[1] += free
    for size_kb, (total, free) in sums.items():
        size_dir = root / "kernel" / "mm" / "hugepages" / f"hugepages-{size_kb}kB"
        _write(size_dir / "nr_hugepages", total)
        _write(size_dir / "free_hugepages", free)
        _write(size_dir / "surplus_hugepages", 0)
        _write(size_dir / "resv_hugepages", 0)


def _device_dir(root: Path, address: str) -> Path:
    domain, bus, _ = address.split(":")
    return root / "devices" / f"pci{domain}:{bus}" / address


def _netdev_parent(root: Path, spec: PciSpec) -> Path:
    base = _device_dir(root, spec.address)
    return base / "virtio0" / "net" if spec.virtio else base / "net"


def _check_spec(spec: PciSpec) -> None:
    if spec.netdev and (spec.driver is None or spec.driver in DPDK_DRIVERS):
        raise ValueError(f"{spec.address}: a netdev needs a kernel network driver, "
                         f"not {spec.driver!r}")


def _write_pci(root: Path, spec: PciSpec) -> list[PciSpec]:
    _check_spec(spec)
    dev = _device_dir(root, spec.address)
    dev.mkdir(parents=True, exist_ok=False)
    _write(dev / "class", spec.pci_class)
    _write(dev / "vendor", f"0x{spec.vendor}")
    _write(dev / "device", f"0x{spec.device}")
    _write(dev / "subsystem_vendor", f"0x{spec.vendor}")
    _write(dev / "subsystem_device", "0x0000")
    _write(dev / "numa_node", spec.numa_node)
    _write(dev / "driver_override", "(null)")
    _link(root / "bus" / "pci" / "devices" / spec.address, dev)
    _write_driver(root, spec)
    if spec.iommu_group is not None:
        group_dir = root / "kernel" / "iommu_groups" / str(spec.iommu_group)
        _link(dev / "iommu_group", group_dir)
        _link(group_dir / "devices" / spec.address, dev)
        if spec.noiommu:
            _write(group_dir / "name", "vfio-noiommu")
    _write_netdev(root, spec)
    written = [spec]
    if spec.vfs or spec.totalvfs:
        _write(dev / "sriov_totalvfs", max(spec.totalvfs, len(spec.vfs)))
        _write(dev / "sriov_numvfs", len(spec.vfs))
        for index, vf in enumerate(spec.vfs):
            vf = replace(vf, physfn=spec.address)
            written.extend(_write_pci(root, vf))
            _link(dev / f"virtfn{index}", _device_dir(root, vf.address))
            _link(_device_dir(root, vf.address) / "physfn", dev)
        spec = replace(spec, vfs=tuple(replace(vf, physfn=spec.address) for vf in spec.vfs))
        written[0] = spec
    return written


def _write_driver(root: Path, spec: PciSpec) -> None:
    if spec.driver is None:
        return
    dev = _device_dir(root, spec.address)
    driver_dir = root / "bus" / "pci" / "drivers" / spec.driver
    driver_dir.mkdir(parents=True, exist_ok=True)
    _link(dev / "driver", driver_dir)
    _link(driver_dir / spec.address, dev)


def _write_netdev(root: Path, spec: PciSpec) -> None:
    if not spec.netdev:
        return
    net_dir = _netdev_parent(root, spec) / spec.netdev
    _write(net_dir / "operstate", "up")
    _write(net_dir / "address", "02:00:00:00:00:01")
    _link(root / "class" / "net" / spec.netdev, net_dir)
