"""A stand-in for the kubelet's device manager, written from its documented behaviour.

What it does, as the kubelet does:
- on start, empties its device-plugins directory (every socket; the checkpoint file
  ``kubelet_internal_checkpoint`` stays) and serves ``Registration`` on ``kubelet.sock``;
- ``Register``: refuses a version other than v1beta1, a resource name that is not an
  extended resource (``domain/name``, not in kubernetes.io) and an endpoint that is not a
  file name in its directory; then dials the plugin's socket, asks
  ``GetDevicePluginOptions`` before answering, and keeps a ``ListAndWatch`` stream open on
  a thread, replacing any earlier connection of the same resource;
- admitting a pod: for each container and resource, ``available`` = healthy devices no
  other container holds, ``must_include`` = devices of this pod's init containers it can
  reuse, ``GetPreferredAllocation`` when the plugin offers it, then one ``Allocate`` per
  container and resource;
- restart: stop everything, delete every socket in the directory and serve a new
  ``kubelet.sock`` (a new inode); allocations survive (the kubelet checkpoints them).

Allocations are recorded per pod and container; ``pod_allocations()`` hands them to the
pod-resources stand-in (``podresources.py``) in its record type.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from demo.kubelet_standin.podresources import AllocatableDevices, PodAllocation
from protos.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("v1beta1",)
KUBELET_SOCKET = "kubelet.sock"
CHECKPOINT_FILE = "kubelet_internal_checkpoint"
HEALTHY = "Healthy"

_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class StandinError(RuntimeError):
    """The stand-in kubelet could not admit a pod; the message carries the plugin's answer."""


@dataclass(frozen=True)
class Allocation:
    pod_namespace: str
    pod_name: str
    container: str
    resource: str
    device_ids: tuple[str, ...]
    numa_nodes: tuple[int, ...] = ()
    init: bool = False


@dataclass(frozen=True)
class Registration:
    resource: str
    endpoint: str
    version: str
    options: api_pb2.DevicePluginOptions | None
    at: float  # time.monotonic() when the kubelet accepted it
    error: str = ""  # why the kubelet refused it ("" when accepted)


@dataclass(frozen=True)
class DeviceRecord:
    id: str
    health: str
    numa_nodes: tuple[int, ...]

    @property
    def healthy(self) -> bool:
        return self.health == HEALTHY


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a pod: how many devices of which resources it requests."""

    name: str
    resources: Mapping[str, int]
    init: bool = False


@dataclass
class _Endpoint:
    resource: str
    socket: Path
    channel: grpc.Channel
    stub: api_pb2_grpc.DevicePluginStub
    options: api_pb2.DevicePluginOptions
    devices: dict[str, DeviceRecord] = field(default_factory=dict)
    updates: int = 0
    stream: grpc.Future | None = None
    stream_ended: bool = False
    stream_error: str = ""

    def close(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
        self.channel.close()


def is_extended_resource_name(name: str) -> bool:
    """The kubelet's IsExtendedResourceName: ``<domain>/<name>`` outside kubernetes.io."""
    if "/" not in name or name.startswith("requests.") or "kubernetes.io/" in name:
        return False
    prefix, _, short = name.partition("/")
    return (0 < len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(prefix))
            and bool(_QUALIFIED_NAME.fullmatch(short)))


class KubeletStandin:
    def __init__(self, plugin_dir: Path, connect_timeout: float = 10.0) -> None:
        self.plugin_dir = Path(plugin_dir)
        self.socket = self.plugin_dir / KUBELET_SOCKET
        self.connect_timeout = connect_timeout
        self.registrations: list[Registration] = []
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._endpoints: dict[str, _Endpoint] = {}
        self._allocations: list[Allocation] = []
        # Wall time of each Allocate call as the device manager waits for it (the kubelet
        # exports the same as kubelet_device_plugin_alloc_duration_seconds).
        self.alloc_durations: list[float] = []
        self._server: grpc.Server | None = None

    # --- lifecycle ---

    def start(self) -> KubeletStandin:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        self._remove_contents()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4,
                                                        thread_name_prefix="kubelet-standin"))
        api_pb2_grpc.add_RegistrationServicer_to_server(_RegistrationServicer(self), server)
        if server.add_insecure_port(f"unix:{self.socket}") == 0:
            raise OSError(f"stand-in kubelet cannot listen on {self.socket}")
        server.start()
        os.chmod(self.socket, 0o600)
        self._server = server
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=0).wait()
        with self._lock:
            endpoints, self._endpoints = list(self._endpoints.values()), {}
            self._cond.notify_all()
        for endpoint in endpoints:
            endpoint.close()
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass

    def restart(self) -> None:
        """As a kubelet restart: every socket in the directory goes, a new kubelet.sock comes."""
        self.stop()
        self.start()

    def __enter__(self) -> KubeletStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests and the demo read ---

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` is true; re-checked whenever the kubelet's view changes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def resources(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._endpoints)

    def devices(self, resource: str) -> dict[str, DeviceRecord]:
        with self._lock:
            endpoint = self._endpoints.get(resource)
            return dict(endpoint.devices) if endpoint else {}

    def updates(self, resource: str) -> int:
        """How many ListAndWatch messages arrived on the current connection of ``resource``."""
        with self._lock:
            endpoint = self._endpoints.get(resource)
            return endpoint.updates if endpoint else 0

    def stream_ended(self, resource: str) -> bool:
        with self._lock:
            endpoint = self._endpoints.get(resource)
            return endpoint is None or endpoint.stream_ended

    def options(self, resource: str) -> api_pb2.DevicePluginOptions | None:
        with self._lock:
            endpoint = self._endpoints.get(resource)
            return endpoint.options if endpoint else None

    def accepted_registrations(self, resource: str | None = None) -> list[Registration]:
        with self._lock:
            return [r for r in self.registrations
                    if not r.error and (resource is None or r.resource == resource)]

    @property
    def allocations(self) -> list[Allocation]:
        with self._lock:
            return list(self._allocations)

    def pod_allocations(self) -> list[PodAllocation]:
        """Allocations of running containers, in the pod-resources stand-in's record type."""
        return [PodAllocation(a.pod_namespace, a.pod_name, a.container, a.resource,
                              a.device_ids, a.numa_nodes)
                for a in self.allocations if not a.init]

    def allocatable(self) -> list[AllocatableDevices]:
        out = []
        with self._lock:
            for resource, endpoint in self._endpoints.items():
                for device in endpoint.devices.values():
                    if device.healthy:
                        out.append(AllocatableDevices(resource, (device.id,), device.numa_nodes))
        return out

    # --- pods ---

    def admit_pod(self, namespace: str, name: str, containers: Sequence[ContainerSpec]
                  ) -> dict[str, dict[str, api_pb2.ContainerAllocateResponse]]:
        """Allocate every container's devices; container -> resource -> Allocate answer.

        On a refusal nothing of this pod stays allocated, and StandinError says why.
        """
        answers: dict[str, dict[str, api_pb2.ContainerAllocateResponse]] = {}
        reusable: dict[str, list[str]] = {}
        try:
            for container in containers:
                answers[container.name] = {}
                for resource, count in container.resources.items():
                    must = reusable.get(resource, [])[:count]
                    ids = self._choose(resource, count, must)
                    answer = self._allocate(resource, ids)
                    self._record(Allocation(namespace, name, container.name, resource,
                                            tuple(ids), self._numa_of(resource, ids),
                                            container.init))
                    answers[container.name][resource] = answer
                    if container.init:
                        reusable[resource] = list(ids)
                    else:
                        reusable[resource] = [d for d in reusable.get(resource, [])
                                              if d not in ids]
        except Exception:
            self.remove_pod(namespace, name)
            raise
        return answers

    def remove_pod(self, namespace: str, name: str) -> None:
        """The pod ended: its devices are free for others (the plugin is not told)."""
        with self._cond:
            self._allocations = [a for a in self._allocations
                                 if (a.pod_namespace, a.pod_name) != (namespace, name)]
            self._cond.notify_all()

    def preferred(self, resource: str, available: Sequence[str], must_include: Sequence[str],
                  size: int) -> list[str]:
        """Call GetPreferredAllocation directly (for tests of the plugin's choice)."""
        endpoint = self._endpoint(resource)
        request = api_pb2.PreferredAllocationRequest(container_requests=[
            api_pb2.ContainerPreferredAllocationRequest(
                available_deviceIDs=list(available), must_include_deviceIDs=list(must_include),
                allocation_size=size)])
        answer = endpoint.stub.GetPreferredAllocation(request, timeout=5)
        return list(answer.container_responses[0].deviceIDs)

    def allocate(self, resource: str, device_ids: Sequence[str]
                 ) -> api_pb2.ContainerAllocateResponse:
        """Call Allocate directly for one container (no bookkeeping)."""
        return self._allocate(resource, device_ids)

    # --- internals ---

    def _endpoint(self, resource: str) -> _Endpoint:
        with self._lock:
            endpoint = self._endpoints.get(resource)
        if endpoint is None:
            raise StandinError(f"no device plugin registered resource {resource}")
        return endpoint

    def _in_use(self, resource: str) -> set[str]:
        with self._lock:
            return {d for a in self._allocations if a.resource == resource and not a.init
                    for d in a.device_ids}

    def _choose(self, resource: str, count: int, must: list[str]) -> list[str]:
        endpoint = self._endpoint(resource)
        in_use = self._in_use(resource)
        with self._lock:
            healthy = [d.id for d in endpoint.devices.values() if d.healthy]
        available = [d for d in healthy if d not in in_use or d in must]
        if len(available) < count:
            raise StandinError(f"{resource}: {count} requested, {len(available)} available")
        if not endpoint.options.get_preferred_allocation_available:
            rest = [d for d in available if d not in must]
            return must + rest[:count - len(must)]
        try:
            chosen = self.preferred(resource, available, must, count)
        except grpc.RpcError as exc:
            raise StandinError(f"{resource}: GetPreferredAllocation failed: "
                               f"{exc.code().name}: {exc.details()}") from None
        wrong = [d for d in chosen if d not in available]
        if wrong or len(set(chosen)) != count or not set(must) <= set(chosen):
            raise StandinError(f"{resource}: plugin preferred {chosen} for {count} of "
                               f"{available} with must_include {must}")
        return chosen

    def _allocate(self, resource: str, device_ids: Sequence[str]
                  ) -> api_pb2.ContainerAllocateResponse:
        endpoint = self._endpoint(resource)
        request = api_pb2.AllocateRequest(container_requests=[
            api_pb2.ContainerAllocateRequest(devices_ids=list(device_ids))])
        started = time.perf_counter()
        try:
            answer = endpoint.stub.Allocate(request, timeout=5)
        except grpc.RpcError as exc:
            raise StandinError(f"{resource}: Allocate failed: {exc.code().name}: "
                               f"{exc.details()}") from exc
        finally:
            self.alloc_durations.append(time.perf_counter() - started)
        if len(answer.container_responses) != 1:
            raise StandinError(f"{resource}: Allocate answered {len(answer.container_responses)}"
                               " container responses for one container")
        return answer.container_responses[0]

    def _numa_of(self, resource: str, ids: Iterable[str]) -> tuple[int, ...]:
        devices = self.devices(resource)
        return tuple(sorted({n for d in ids if d in devices for n in devices[d].numa_nodes}))

    def _record(self, allocation: Allocation) -> None:
        with self._cond:
            self._allocations.append(allocation)
            self._cond.notify_all()

    def _remove_contents(self) -> None:
        for entry in self.plugin_dir.iterdir():
            if entry.name == CHECKPOINT_FILE or entry.is_dir():
                continue
            entry.unlink(missing_ok=True)

    def register(self, request: api_pb2.RegisterRequest) -> str:
        """Handle Register; returns "" when accepted, else the kubelet's error text."""
        error = ""
        if request.version not in SUPPORTED_VERSIONS:
            error = (f"requested device plugin version {request.version!r} is not supported; "
                     f"supported: {', '.join(SUPPORTED_VERSIONS)}")
        elif not is_extended_resource_name(request.resource_name):
            error = f"invalid name of device plugin socket: {request.resource_name!r}"
        elif not request.endpoint or "/" in request.endpoint:
            error = f"endpoint {request.endpoint!r} is not a file name in {self.plugin_dir}"
        else:
            try:
                self._connect(request.resource_name, self.plugin_dir / request.endpoint)
            except (grpc.RpcError, OSError) as exc:
                error = f"cannot connect to device plugin {request.endpoint}: {exc!r}"
        with self._cond:
            self.registrations.append(Registration(
                request.resource_name, request.endpoint, request.version,
                request.options if request.HasField("options") else None,
                time.monotonic(), error))
            self._cond.notify_all()
        return error

    def _connect(self, resource: str, socket: Path) -> None:
        channel = grpc.insecure_channel(f"unix:{socket}")
        stub = api_pb2_grpc.DevicePluginStub(channel)
        try:
            # wait_for_ready: the kubelet dials with a blocking connect and a timeout.
            options = stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=self.connect_timeout,
                                                  wait_for_ready=True)
        except grpc.RpcError:
            channel.close()
            raise
        endpoint = _Endpoint(resource, socket, channel, stub, options)
        endpoint.stream = stub.ListAndWatch(api_pb2.Empty())
        with self._cond:
            old = self._endpoints.get(resource)
            self._endpoints[resource] = endpoint
            self._cond.notify_all()
        if old is not None:
            old.close()
        threading.Thread(target=self._watch, args=(endpoint,), daemon=True,
                         name=f"kubelet-standin-law-{resource}").start()

    def _watch(self, endpoint: _Endpoint) -> None:
        assert endpoint.stream is not None
        try:
            for message in endpoint.stream:  # type: ignore[attr-defined]
                devices = {d.ID: DeviceRecord(d.ID, d.health,
                                              tuple(n.ID for n in d.topology.nodes))
                           for d in message.devices}
                with self._cond:
                    endpoint.devices = devices
                    endpoint.updates += 1
                    self._cond.notify_all()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                endpoint.stream_error = f"{exc.code().name}: {exc.details()}"
        finally:
            with self._cond:
                endpoint.stream_ended = True
                self._cond.notify_all()


class _RegistrationServicer(api_pb2_grpc.RegistrationServicer):
    def __init__(self, kubelet: KubeletStandin) -> None:
        self._kubelet = kubelet

    def Register(self, request: api_pb2.RegisterRequest,
                 context: grpc.ServicerContext) -> api_pb2.Empty:
        error = self._kubelet.register(request)
        if error:
            context.abort(grpc.StatusCode.UNKNOWN, error)
        return api_pb2.Empty()
