"""A pod's view of numanet, built in a directory: what one container would see.

    pod = PodView(tmp_path)                       # node facts: helpers.sysfs.two_nodes
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0, ifname="net1")
    pod.hugepages("/hugepages", "2M", request_mib=1024)
    pod.write()
    pod.args("dpdk-args", "--cpus", "2-3")        # numanet-app's argv for this view

Files come from numanet's own writers: numanet.json from ``cni.container_config``, the
device-info in network-status from ``deviceplugin.devinfo``, the environment from
``deviceplugin.allocate.container_env``; the annotations file is quoted as the kubelet
writes downward-API files (Go's %q). Layout below ``root`` (``numanet-app --root``)::

    etc/podnetinfo/annotations, hugepages_<2M|1G>_request_<container>
    run/numanet/<pool>/<deviceID>/numanet.json
    sys/...            (helpers.sysfs)
    proc/mounts
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni.container_config import ContainerView, write_container_config
from cni.result import Dns, IpamResult, IpConfig, Route
from deviceplugin import naming
from deviceplugin.allocate import container_env
from deviceplugin.devinfo import device_info
from deviceplugin.slots import Slot
from helpers.sysfs import FakeSysfs, two_nodes

PREFIX = naming.DEFAULT_PREFIX
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


def go_quote(text: str) -> str:
    """Go's %q for the ASCII and UTF-8 text the kubelet writes."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


@dataclass
class PodView:
    root: Path
    sysfs: FakeSysfs | None = None
    env: dict[str, str] = field(default_factory=dict)
    status: list[dict[str, Any]] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    container: str = "app"

    def __post_init__(self) -> None:
        if self.sysfs is None:
            self.sysfs = two_nodes(self.root / "sys")
        self.status.append({"name": "default-net", "interface": "eth0", "default": True,
                            "ips": ["10.244.1.7"], "dns": {}})

    @property
    def podnetinfo(self) -> Path:
        return self.root / "etc" / "podnetinfo"

    def slot_dir(self, pool: str, device_id: str) -> Path:
        return self.root / "run" / "numanet" / pool / device_id

    # -- what numanet gives the pod -------------------------------------------------------

    def slot(self, pool: str, kind: str, role: str, *, node: int = 0, index: int = 0,
             ifname: str = "net1", network: str | None = None, mac: str | None = None,
             ips: tuple[IpConfig, ...] = (), routes: tuple[Route, ...] = (),
             mtu: int | None = None, queues: int | None = None, memif_mode: str | None = None,
             ring_size: int | None = None, buffer_size: int | None = None,
             address: str | None = None, peer: str | None = None,
             config: bool = True, in_status: bool = True) -> Slot:
        """A socket slot Allocate gave the container and the CNI ADD plumbed."""
        device_id = naming.slot_device_id(pool, node, index)
        host_dir = self.slot_dir(pool, device_id)
        host_dir.mkdir(parents=True, exist_ok=True)
        slot = Slot(device_id=device_id, pool=pool, resource=naming.resource_name(PREFIX, pool),
                    kind=kind, numa_node=node, index=index, vswitch="ovs",  # type: ignore[arg-type]
                    container_role=role,
                    memif_mode=(memif_mode or "ethernet") if kind == "memif" else None,
                    host_dir=host_dir, container_dir=naming.container_slot_dir(pool, device_id),
                    ring_size=ring_size, buffer_size=buffer_size)
        ipam = IpamResult(ips=ips, routes=routes, dns=Dns())
        if config:
            write_container_config(slot, ContainerView(network or pool, ifname, mac, ipam, mtu,
                                                       queues=queues, address=address, peer=peer))
        self._allocated(slot)
        if in_status:
            self._status(slot, network or pool, ifname, mac, ipam)
        return slot

    def nic(self, pool: str, pci: str, *, ifname: str = "net1", network: str | None = None,
            mac: str | None = None, ips: tuple[IpConfig, ...] = (),
            in_status: bool = True) -> Slot:
        """A DPDK-bound NIC (numanet writes no numanet.json for one)."""
        assert self.sysfs is not None
        spec = next((s for s in self.sysfs.pci if s.address == pci), None)
        node = spec.numa_node if spec is not None and isinstance(spec.numa_node, int) else None
        slot = Slot(device_id=pci, pool=pool, resource=naming.resource_name(PREFIX, pool),
                    kind="dpdk-nic", numa_node=node if node is not None and node >= 0 else None,
                    pci_address=pci, iommu_group="61")
        self._allocated(slot)
        if in_status:
            self._status(slot, network or pool, ifname, mac, IpamResult(ips=ips))
        return slot

    def hugepages(self, path: str, page: str = "2M", request_mib: int | None = None) -> None:
        """A hugetlbfs mount in the container and, when given, its request file."""
        size = {"2M": "2M", "1G": "1024M"}[page]
        self.mounts.append(f"nodev {path} hugetlbfs rw,relatime,pagesize={size} 0 0")
        if request_mib is not None:
            for kind in ("request", "limit"):
                self._write(self.podnetinfo / f"hugepages_{page}_{kind}_{self.container}",
                            f"{request_mib}")
            self.env["CONTAINER_NAME"] = self.container

    def _allocated(self, slot: Slot) -> None:
        """The environment Allocate gives (one Allocate per pool, so IDs accumulate)."""
        self.slots.append(slot)
        same_pool = [s for s in self.slots if s.pool == slot.pool]
        self.env.update(container_env(PREFIX, slot.pool, same_pool))

    def _status(self, slot: Slot, network: str, ifname: str, mac: str | None,
                ipam: IpamResult) -> None:
        entry: dict[str, Any] = {"name": f"default/{network}", "interface": ifname,
                                 "ips": [ip.address.split("/")[0] for ip in ipam.ips]}
        if mac:
            entry["mac"] = mac
        entry["dns"] = {}
        entry["device-info"] = device_info(slot)
        self.status.append(entry)

    # -- files ----------------------------------------------------------------------------

    def write(self) -> PodView:
        notes = {"k8s.v1.cni.cncf.io/networks": ",".join(
                     f"{s.pool}" for s in self.slots),
                 NETWORK_STATUS: json.dumps(self.status, indent=1),
                 **self.annotations}
        lines = [f"{key}={go_quote(value)}" for key, value in sorted(notes.items())]
        self._write(self.podnetinfo / "annotations", "\n".join(lines))
        self._write(self.root / "proc" / "mounts",
                    "\n".join(["proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
                               *self.mounts]) + "\n")
        return self

    def args(self, command: str, *extra: str) -> list[str]:
        """numanet-app's command line for this view."""
        return [command, "--root", str(self.root), *extra]

    @staticmethod
    def _write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text if text.endswith("\n") or not text else text + "\n")
