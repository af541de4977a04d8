"""A node for end-to-end tests of agent restarts: the real agent in this process, started
again as a new process would be (new backends built from its config file, same dirs), the
kubelet and pod-resources stand-ins, real host-local IPAM and the real ``numanet-cni`` shim.
The OVS and VPP end-to-end tests add what their vSwitch holds."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vswitch
from agent.agent import Agent
from agent.vswitches import endpoint_of
from demo.kubelet_standin import ContainerSpec, KubeletStandin
from demo.kubelet_standin.podresources import PodResourcesStandIn
from deviceplugin import naming
from deviceplugin.config import Config
from helpers.cni_shim import CNI_BIN, CniCall, leases, run_shim
from helpers.deviceplugin import AgentHarness
from vswitch.api import VSwitch


@dataclass
class RestartableAgentHarness(AgentHarness):
    """The harness with the agent's own factory: each agent start builds new backends from
    the config file, so a restarted agent knows only what the vSwitch and its disk tell it.
    ``vswitches`` still wins for a name it holds (a backend the test controls)."""

    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per kind
    created: list[VSwitch] = field(default_factory=list)

    def _factory(self, name: str, config: Config) -> VSwitch:
        if name in self.vswitches:
            return self.vswitches[name]
        backend = vswitch.create(name, **endpoint_of(name, config),
                                 **self.backend_options.get(name, {}))
        self.created.append(backend)
        return backend

    def stop_agent(self) -> None:
        """Stop the agent as SIGTERM does; the kubelet stand-in keeps running."""
        assert self.agent is not None
        self.agent.stop()
        self.agent = None

    def start_agent(self) -> None:
        """A new agent process's worth of objects: new monitor, new backends, same dirs."""
        assert self.agent is None
        self._start_agent()


@dataclass
class AgentNode:
    root: Path
    harness: RestartableAgentHarness
    network: str
    pod_resources: PodResourcesStandIn | None = None
    pods: dict[str, str] = field(default_factory=dict)  # pod name -> device ID

    @property
    def run_dir(self) -> Path:
        return self.harness.run_dir

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    @property
    def cni_devinfo_dir(self) -> Path:
        # The agent confines CNIDeviceInfoFile to <devinfo root>/cni; its devinfo root is the
        # parent of the device plugin's devinfo directory.
        return self.harness.devinfo_dir.parent / "cni"

    @property
    def agent(self) -> Agent:
        assert self.harness.agent is not None
        return self.harness.agent

    @property
    def kubelet(self) -> KubeletStandin:
        assert self.harness.kubelet is not None
        return self.harness.kubelet

    def start_pod_resources(self) -> None:
        self.pod_resources = PodResourcesStandIn(self.agent.options.pod_resources,
                                                 self.kubelet.pod_allocations).start()

    def admit(self, pod: str, resource: str) -> str:
        """The kubelet admits a pod asking for one device of ``resource`` (Allocate, gRPC)."""
        self.kubelet.admit_pod("default", pod, [ContainerSpec("app", {resource: 1})])
        [device_id] = [a.device_ids[0] for a in self.kubelet.allocations if a.pod_name == pod]
        self.pods[pod] = device_id
        return device_id

    def cni(self, command: str, conf: dict[str, Any], container: str, pod: str,
            netns_path: str = "") -> CniCall:
        """The shim exec'd as a runtime does, for ``pod``'s ``net1``."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
               "CNI_CONTAINERID": container, "CNI_IFNAME": "net1", "CNI_PATH": CNI_BIN,
               "NUMANET_CNI_SOCKET": str(naming.cni_socket(self.run_dir)),
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"}
        if netns_path:
            env["CNI_NETNS"] = netns_path
        if command == "GC":  # GC is about a network, not one container
            del env["CNI_CONTAINERID"], env["CNI_IFNAME"], env["CNI_ARGS"]
        return run_shim(env, conf)

    def leases(self) -> list[str]:
        return leases(self.ipam_dir, self.network)

    def records(self) -> list[str]:
        return sorted(p.stem for p in (self.run_dir / "cni").glob("*.json"))
