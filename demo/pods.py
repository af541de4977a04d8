"""The demo's two pods, as the kubelet and the container see them.

A pod asks for one slot of a resource; the kubelet stand-in admits it (preferred
allocation, Allocate) and keeps the answer: environment and mounts. The pod's
application then finds everything the way a container would: its device ID in
``NUMANET_<POOL>``, ``numanet.json`` in the slot directory mounted at
``/run/numanet/<pool>/<id>/``, and the socket path, MAC and role inside that file. The
container paths are turned into host paths through the Allocate mounts, exactly as a
container runtime would bind them.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from demo.kubelet_standin.kubelet import ContainerSpec, KubeletStandin
from deviceplugin import naming
from protos.deviceplugin.v1beta1 import api_pb2

CONTAINER = "app"


class PodError(RuntimeError):
    pass


@dataclass(frozen=True)
class Interface:
    """A pod's interface, read from its numanet.json (container paths mapped to the host)."""

    device_id: str
    kind: str
    role: str  # vhost-user mode / memif role of the container side
    container_socket: str
    socket: Path  # host path
    mac: str | None
    ips: tuple[str, ...]
    numa_node: int | None
    config_path: Path  # host path of numanet.json
    memif_id: int = 0
    queues: int | None = None  # queue pairs to open, when numanet.json says


@dataclass
class Pod:
    namespace: str
    name: str
    pool: str
    resource: str
    netns: str
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    sandbox_id: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex)
    env: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # container path -> host path
    device_id: str | None = None
    numa_node: int | None = None
    interface: Interface | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def admit(self, kubelet: KubeletStandin) -> None:
        """Let the kubelet stand-in allocate one slot (GetPreferredAllocation + Allocate)."""
        answers = kubelet.admit_pod(self.namespace, self.name,
                                    [ContainerSpec(CONTAINER, {self.resource: 1})])
        answer: api_pb2.ContainerAllocateResponse = answers[CONTAINER][self.resource]
        self.env = dict(answer.envs)
        self.mounts = {m.container_path: m.host_path for m in answer.mounts}
        ids = self.env.get(naming.pool_env_name(self.pool), "")
        if not ids:
            raise PodError(f"Allocate for {self.ref} set no {naming.pool_env_name(self.pool)}: "
                           f"got environment {self.env}")
        self.device_id = naming.validate_device_id(ids.split(",")[0])
        record = next(a for a in kubelet.allocations
                      if (a.pod_namespace, a.pod_name) == (self.namespace, self.name))
        self.numa_node = record.numa_nodes[0] if record.numa_nodes else None

    def host_path(self, container_path: str | os.PathLike[str]) -> Path:
        """Where a path the container sees lives on the host, through the Allocate mounts."""
        path = PurePosixPath(container_path)
        best: tuple[PurePosixPath, str] | None = None
        for inside, outside in self.mounts.items():
            mount = PurePosixPath(inside)
            if (path == mount or mount in path.parents) and (
                    best is None or len(mount.parts) > len(best[0].parts)):
                best = (mount, outside)
        if best is None:
            raise PodError(f"{container_path} is not inside any mount the kubelet gave "
                           f"{self.ref} ({', '.join(self.mounts) or 'none'})")
        return Path(best[1]) / path.relative_to(best[0])

    def read_interface(self) -> Interface:
        """What the pod's application reads: numanet.json in its slot directory."""
        if self.device_id is None:
            raise PodError(f"{self.ref} has no device yet")
        container_dir = naming.container_slot_dir(self.pool, self.device_id)
        path = self.host_path(container_dir / naming.CONTAINER_CONFIG_NAME)
        try:
            doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PodError(f"{self.ref}: cannot read {naming.CONTAINER_CONFIG_NAME} at "
                           f"{path}: {exc}") from None
        socket = doc.get("socketPath")
        if not isinstance(socket, str):
            raise PodError(f"{self.ref}: {path} has no socketPath")
        self.interface = Interface(
            device_id=str(doc.get("deviceID", self.device_id)),
            kind=str(doc.get("kind")),
            role=str(doc.get("mode") or doc.get("role")),
            container_socket=socket,
            socket=self.host_path(socket),
            mac=doc.get("mac"),
            ips=tuple(str(ip.get("address")) for ip in doc.get("ips", [])),
            numa_node=doc.get("numaNode"),
            config_path=path,
            memif_id=int(doc.get("memifId", 0)),
            queues=int(doc["queues"]) if isinstance(doc.get("queues"), int) else None,
        )
        return self.interface
