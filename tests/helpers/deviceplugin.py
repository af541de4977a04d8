"""Helpers for device plugin tests: a vSwitch test double, the device-info spec check, and a
harness running the real agent in-process against the kubelet stand-in.

The vSwitch double is used ONLY where the vSwitch is not what a test is about (slot
health flips, placement); tests of the vSwitch path use a private OVS-DPDK.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.agent import Agent, AgentOptions
from demo.kubelet_standin import KubeletStandin
from deviceplugin.config import Config
from helpers.sysfs import FakeSysfs
from vswitch.api import CpuTopology, Health, PluggedPort, PortSpec, VSwitch, VSwitchUnavailable

# Two pools on vSwitch doubles and a NIC pool; @HUGEPAGES@ becomes the harness's directory.
BASE_CONFIG = """\
resourcePrefix: numanet.io
hugepages: {pageSize: 2Mi, path: @HUGEPAGES@}
vswitches:
  ovs: {db: "unix:/nonexistent/db.sock", bridge: br-test}
pools:
  - name: vhostuser-ovs
    kind: vhost-user
    vswitch: ovs
    mode: server
    slotsPerNode: 4
    numaNodes: auto
  - name: memif-vpp
    kind: memif
    vswitch: vpp
    role: slave
    memifMode: ip
    slotsPerNode: 2
  - name: dpdk-nic
    kind: dpdk-nic
    selectors: {vendors: ["8086"], drivers: [vfio-pci]}
"""

_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


class InMemoryVSwitchDouble(VSwitch):
    """TEST DOUBLE: an in-memory vSwitch whose health and polling nodes a test flips."""

    def __init__(self, name: str = "ovs", *, healthy: bool = True,
                 poll_nodes: frozenset[int] | None = None, reachable: bool = True) -> None:
        self.name = name
        self.healthy = healthy
        self.reason = "" if healthy else "double says down"
        self.poll_nodes = poll_nodes
        self.reachable = reachable
        self.connects = 0
        self.closed = False
        self._ports: dict[str, PluggedPort] = {}
        self._lock = threading.Lock()

    def set_health(self, healthy: bool, reason: str = "") -> None:
        self.healthy, self.reason = healthy, reason

    def connect(self, timeout: float = 5.0) -> None:
        if not self.reachable:
            raise VSwitchUnavailable(f"double {self.name} is unreachable")
        self.connects += 1

    def close(self) -> None:
        self.closed = True

    def health(self) -> Health:
        return Health(self.healthy, self.reason)

    def poll_numa_nodes(self, topology: CpuTopology) -> frozenset[int] | None:
        return self.poll_nodes

    def plug(self, spec: PortSpec) -> PluggedPort:
        port = PluggedPort(spec.device_id, f"nn-{spec.device_id}", spec.kind, spec.socket_path,
                           spec.network, spec.owner)
        with self._lock:
            self._ports[spec.device_id] = port
        return port

    def unplug(self, device_id: str) -> bool:
        with self._lock:
            return self._ports.pop(device_id, None) is not None

    def ports(self) -> list[PluggedPort]:
        with self._lock:
            return list(self._ports.values())


def check_device_info(document: dict[str, Any]) -> None:
    """Assert the fields device-info spec 1.1.0 requires (section 3), per type."""
    assert document["type"] in ("pci", "vdpa", "vhost-user", "memif"), document
    assert isinstance(document["version"], str) and _SEMVER.fullmatch(document["version"])
    kind = document["type"]
    body = document[kind]
    assert isinstance(body, dict), document
    if kind == "pci":
        assert _BDF.fullmatch(body["pci-address"]), body
        if "pf-pci-address" in body:
            assert _BDF.fullmatch(body["pf-pci-address"]), body
    elif kind == "vhost-user":
        assert body["mode"] in ("client", "server"), body
        assert isinstance(body["path"], str) and body["path"].startswith("/"), body
    elif kind == "memif":
        assert body["role"] in ("master", "slave"), body
        assert body["mode"] in ("ethernet", "ip", "inject-punt"), body
        assert isinstance(body["path"], str) and body["path"].startswith("/"), body


def short_dir(prefix: str = "np-") -> Path:
    """A short directory under /tmp: unix socket paths stop at 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@dataclass
class AgentHarness:
    """The real ``Agent`` in this process, the kubelet stand-in, a fake sysfs, vSwitch doubles."""

    root: Path
    sysfs: FakeSysfs
    config_text: str
    vswitches: dict[str, VSwitch] = field(default_factory=dict)
    cdi: bool = False
    slot_group: int | None = None
    refresh_interval: float = 0.1  # fast for tests; the agent's default is 1 s
    reconcile_interval: float = 300.0
    metrics_address: str = "off"
    agent: Agent | None = None
    kubelet: KubeletStandin | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def plugin_dir(self) -> Path:
        return self.kubelet_dir / "device-plugins"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def devinfo_dir(self) -> Path:
        return self.root / "devinfo"

    @property
    def cdi_dir(self) -> Path:
        return self.root / "cdi"

    @property
    def hugepages_dir(self) -> Path:
        return self.root / "hugepages"

    def options(self) -> AgentOptions:
        return AgentOptions(
            config_path=self.config_path, kubelet_dir=self.kubelet_dir, run_dir=self.run_dir,
            sysfs=Path(self.sysfs.root), devinfo_dir=self.devinfo_dir,
            cdi_dir=self.cdi_dir if self.cdi else None, metrics_address=self.metrics_address,
            slot_group=self.slot_group,
            refresh_interval=self.refresh_interval, reconcile_interval=self.reconcile_interval,
            udev=False, vswitch_factory=self._factory,
        )

    def _factory(self, name: str, config: Config) -> VSwitch:
        if name not in self.vswitches:
            raise VSwitchUnavailable(f"no vSwitch {name} in this test")
        return self.vswitches[name]

    def write_config(self, text: str) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    def start(self, kubelet_first: bool = True) -> AgentHarness:
        self.hugepages_dir.mkdir(exist_ok=True)
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self.write_config(self.config_text.replace("@HUGEPAGES@", str(self.hugepages_dir)))
        if kubelet_first:
            self.kubelet = KubeletStandin(self.plugin_dir).start()
        self._start_agent()
        if not kubelet_first:
            self.kubelet = KubeletStandin(self.plugin_dir).start()
        return self

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None

    def restart_agent(self) -> None:
        assert self.agent is not None
        self.agent.stop()
        self._start_agent()

    def _start_agent(self) -> None:
        self.agent = Agent(self.options())
        self.agent.vswitch_monitor.interval = 0.1  # probe as fast as the refresher runs
        self.agent.start()

    def wait_devices(self, resource: str, predicate: Callable[[dict[str, Any]], bool],
                     timeout: float = 5.0) -> dict[str, Any]:
        assert self.kubelet is not None
        kubelet = self.kubelet
        ok = kubelet.wait_for(lambda: predicate(kubelet.devices(resource)), timeout)
        devices = kubelet.devices(resource)
        assert ok, f"{resource}: condition not met within {timeout} s; devices: {devices}"
        return devices

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
