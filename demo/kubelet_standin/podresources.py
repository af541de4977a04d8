"""A stand-in for the kubelet's pod-resources API v1 (List, Get, GetAllocatableResources).

Written from the kubelet's documented behaviour (pkg/kubelet/apis/podresources/server_v1):
``Get`` for an unknown pod answers UNKNOWN "pod <name> in namespace <ns> not found";
with the ``KubeletPodResourcesGet`` gate off it answers UNKNOWN "PodResources API Get
method disabled"; kubelets older than ``Get`` answer UNIMPLEMENTED. ``get_mode`` picks
one of those. Devices are reported per container, as the kubelet does.

It is fed with ``PodAllocation`` records: either a fixed iterable (replace it with
``set_allocations``) or a callable read on every request, so the device-plugin
stand-in can hand over what its Allocate calls recorded. ``set_response`` serves a
whole ``List`` answer instead, as a given kubelet wrote it (every pod of the node, each
container with its devices, ``cpu_ids``, ``memory`` and ``dynamic_resources``);
``list_response`` reads one from its JSON form (proto field names).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc
from google.protobuf import json_format

from protos.podresources.v1 import api_pb2, api_pb2_grpc

GetMode = Literal["enabled", "disabled", "unimplemented"]


@dataclass(frozen=True)
class PodAllocation:
    namespace: str
    pod: str
    container: str
    resource: str
    device_ids: tuple[str, ...]
    numa_nodes: tuple[int, ...] = ()


@dataclass(frozen=True)
class DynamicAllocation:
    """One device a DRA driver prepared for a claim a container uses (``dynamic_resources``)."""

    namespace: str
    pod: str
    container: str
    claim_name: str
    claim_namespace: str
    driver: str
    pool: str
    device: str
    cdi_devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class AllocatableDevices:
    resource: str
    device_ids: tuple[str, ...]
    numa_nodes: tuple[int, ...] = ()


AllocationSource = Iterable[PodAllocation] | Callable[[], Iterable[PodAllocation]]
DynamicSource = Callable[[], Iterable[DynamicAllocation]]


def list_response(doc: Mapping[str, object]) -> api_pb2.ListPodResourcesResponse:
    """A ``ListPodResourcesResponse`` from its JSON form; unknown fields are an error, so a
    document that names a field this proto lacks fails here rather than vanishing."""
    return json_format.ParseDict(dict(doc), api_pb2.ListPodResourcesResponse())


def _topology(nodes: tuple[int, ...]) -> api_pb2.TopologyInfo | None:
    if not nodes:
        return None
    return api_pb2.TopologyInfo(nodes=[api_pb2.NUMANode(ID=n) for n in nodes])


def _dynamic_resources(devices: list[DynamicAllocation]) -> list[api_pb2.DynamicResource]:
    claims: dict[tuple[str, str], list[DynamicAllocation]] = {}
    for device in devices:
        claims.setdefault((device.claim_namespace, device.claim_name), []).append(device)
    return [api_pb2.DynamicResource(
        claim_name=name, claim_namespace=namespace,
        claim_resources=[api_pb2.ClaimResource(
            cdi_devices=[api_pb2.CDIDevice(name=c) for c in d.cdi_devices],
            driver_name=d.driver, pool_name=d.pool, device_name=d.device) for d in members])
        for (namespace, name), members in claims.items()]


class _Servicer(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, owner: PodResourcesStandIn) -> None:
        self._owner = owner

    def List(self, request, context):  # noqa: N802 (gRPC method name)
        self._owner.calls["List"] += 1
        return api_pb2.ListPodResourcesResponse(pod_resources=self._owner.pods())

    def Get(self, request, context):  # noqa: N802
        self._owner.calls["Get"] += 1
        mode = self._owner.get_mode
        if mode == "unimplemented":
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        if mode == "disabled":
            context.abort(grpc.StatusCode.UNKNOWN, "PodResources API Get method disabled")
        for pod in self._owner.pods():
            if pod.namespace == request.pod_namespace and pod.name == request.pod_name:
                return api_pb2.GetPodResourcesResponse(pod_resources=pod)
        context.abort(grpc.StatusCode.UNKNOWN,
                      f"pod {request.pod_name} in namespace {request.pod_namespace} not found")

    def GetAllocatableResources(self, request, context):  # noqa: N802
        devices = [api_pb2.ContainerDevices(resource_name=d.resource, device_ids=d.device_ids,
                                            topology=_topology(d.numa_nodes))
                   for d in self._owner.allocatable()]
        return api_pb2.AllocatableResourcesResponse(devices=devices)


class PodResourcesStandIn:
    """Serves pod-resources v1 on ``socket`` (``<kubelet-dir>/pod-resources/kubelet.sock``)."""

    def __init__(self, socket: Path, allocations: AllocationSource = (),
                 get_mode: GetMode = "enabled",
                 allocatable: Iterable[AllocatableDevices] = ()) -> None:
        self.socket = Path(socket)
        self.get_mode: GetMode = get_mode
        self.requests = 0
        self.calls: Counter[str] = Counter()  # RPC name -> calls answered
        self._source: AllocationSource = (allocations if callable(allocations)
                                          else tuple(allocations))
        self._allocatable = tuple(allocatable)
        self._response: api_pb2.ListPodResourcesResponse | None = None
        self._dynamic: DynamicSource = tuple
        self._server: grpc.Server | None = None

    def set_response(self, response: api_pb2.ListPodResourcesResponse | None) -> None:
        """Answer List (and Get) with these pods as they are; None: from the allocations."""
        self._response = response

    def set_dynamic(self, source: DynamicSource) -> None:
        """Also list these DRA devices (read on every request), as the kubelet lists the
        claims its DRA manager prepared: per container, claim, then driver/pool/device."""
        self._dynamic = source

    def set_allocations(self, allocations: AllocationSource) -> None:
        self._source = allocations if callable(allocations) else tuple(allocations)

    def allocations(self) -> tuple[PodAllocation, ...]:
        source = self._source
        return tuple(source() if callable(source) else source)

    def allocatable(self) -> tuple[AllocatableDevices, ...]:
        return self._allocatable

    def pods(self) -> list[api_pb2.PodResources]:
        """Allocations grouped as the kubelet reports them: pod -> container -> devices."""
        self.requests += 1
        if self._response is not None:
            return [api_pb2.PodResources.FromString(pod.SerializeToString())
                    for pod in self._response.pod_resources]
        pods: dict[tuple[str, str], dict[str, list[PodAllocation]]] = {}
        for alloc in self.allocations():
            pods.setdefault((alloc.namespace, alloc.pod), {}).setdefault(
                alloc.container, []).append(alloc)
        dynamic: dict[tuple[str, str], dict[str, list[DynamicAllocation]]] = {}
        for dyn in self._dynamic():
            dynamic.setdefault((dyn.namespace, dyn.pod), {}).setdefault(
                dyn.container, []).append(dyn)
            pods.setdefault((dyn.namespace, dyn.pod), {}).setdefault(dyn.container, [])
        out = []
        for (namespace, name), containers in pods.items():
            out.append(api_pb2.PodResources(name=name, namespace=namespace, containers=[
                api_pb2.ContainerResources(
                    name=container,
                    devices=[api_pb2.ContainerDevices(resource_name=a.resource,
                                                      device_ids=a.device_ids,
                                                      topology=_topology(a.numa_nodes))
                             for a in allocs],
                    dynamic_resources=_dynamic_resources(
                        dynamic.get((namespace, name), {}).get(container, [])))
                for container, allocs in containers.items()]))
        return out

    def start(self) -> PodResourcesStandIn:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(_Servicer(self), server)
        server.add_insecure_port(f"unix://{self.socket}")
        server.start()
        os.chmod(self.socket, 0o600)
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        if self.socket.exists():
            self.socket.unlink()

    def __enter__(self) -> PodResourcesStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
