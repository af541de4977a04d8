"""One device plugin gRPC server per pool, on ``<kubelet-dir>/device-plugins/numanet-<pool>.sock``.

It reads everything from the resource manager and the allocator; it owns only its socket
and its streams. Every kubelet call is logged on one line with the pool, device IDs, NUMA
nodes and duration.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc

from deviceplugin import metrics
from deviceplugin.allocate import AllocateError, Allocator
from deviceplugin.manager import PoolView, ResourceManager
from deviceplugin.preferred import (
    DeviceLayout,
    PreferredAllocationError,
    preferred_allocation,
)
from deviceplugin.registration import plugin_options, socket_identity
from protos.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc
from vswitch.sockfiles import NotASocket, remove_socket_file

log = logging.getLogger(__name__)

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
# A stream re-checks that its server and its kubelet are still there this often.
_STREAM_POLL_S = 0.5


def list_response(view: PoolView) -> api_pb2.ListAndWatchResponse:
    response = api_pb2.ListAndWatchResponse()
    for device in view.devices:
        entry = response.devices.add(ID=device.device_id,
                                     health=HEALTHY if device.health.healthy else UNHEALTHY)
        if device.slot.numa_node is not None:
            entry.topology.nodes.add(ID=device.slot.numa_node)
    return response


class PoolServer(api_pb2_grpc.DevicePluginServicer):
    def __init__(self, pool: str, manager: ResourceManager, allocator: Allocator,
                 socket_path: Path, max_workers: int = 8) -> None:
        self.pool = pool
        self.manager = manager
        self.allocator = allocator
        self.socket_path = Path(socket_path)
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._identity: tuple[int, int] | None = None
        self._stopping = threading.Event()
        self._cache_lock = threading.Lock()
        self._cached: tuple[int, api_pb2.ListAndWatchResponse] | None = None

    # --- lifecycle ---

    def start(self) -> None:
        """Serve on the socket (replacing a stale one); registration is the caller's next step."""
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_socket(self.socket_path)
        self._stopping.clear()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers,
                                       thread_name_prefix=f"dp-{self.pool}"),
            options=[("grpc.so_reuseport", 0)],
        )
        api_pb2_grpc.add_DevicePluginServicer_to_server(self, server)
        if server.add_insecure_port(f"unix:{self.socket_path}") == 0:
            raise OSError(f"cannot listen on {self.socket_path}")
        server.start()
        # Only the kubelet (root) talks to us.
        os.chmod(self.socket_path, 0o600)
        self._server = server
        self._identity = socket_identity(self.socket_path)
        log.info("device plugin serving pool=%s socket=%s", self.pool, self.socket_path)

    def stop(self, grace: float = 0.5) -> None:
        """Stop serving: end every ListAndWatch stream cleanly, then remove our socket."""
        self._stopping.set()
        self.manager.wake_watchers()
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()
        # Remove the socket only if it is still ours (a restarted kubelet may have cleaned it
        # and another process may have bound the name since).
        if self._identity is not None and socket_identity(self.socket_path) == self._identity:
            self.socket_path.unlink(missing_ok=True)
        self._identity = None

    @property
    def serving(self) -> bool:
        return self._server is not None

    def socket_intact(self) -> bool:
        """False once our socket file vanished or was replaced (the kubelet restarted)."""
        return self._identity is not None and socket_identity(self.socket_path) == self._identity

    # --- DevicePlugin service ---

    def GetDevicePluginOptions(self, request: api_pb2.Empty,
                               context: grpc.ServicerContext) -> api_pb2.DevicePluginOptions:
        return plugin_options()

    def ListAndWatch(self, request: api_pb2.Empty,
                     context: grpc.ServicerContext) -> Iterator[api_pb2.ListAndWatchResponse]:
        generation: int | None = None
        view = self.manager.pool(self.pool)
        while not self._stopping.is_set() and context.is_active():
            if view is not None and view.generation != generation:
                generation = view.generation
                response = self._response(view)
                healthy = sum(1 for d in response.devices if d.health == HEALTHY)
                log.info("kubelet call=ListAndWatch pool=%s devices=%d healthy=%d generation=%d",
                         self.pool, len(response.devices), healthy, generation)
                yield response
            view = self.manager.wait_for_change(
                self.pool, generation if generation is not None else -1,
                timeout=_STREAM_POLL_S, cancelled=self._stopping.is_set)
        log.info("ListAndWatch stream ended pool=%s reason=%s", self.pool,
                 "server stopping" if self._stopping.is_set() else "kubelet went away")

    def GetPreferredAllocation(self, request: api_pb2.PreferredAllocationRequest,
                               context: grpc.ServicerContext
                               ) -> api_pb2.PreferredAllocationResponse:
        started = time.perf_counter()
        response = api_pb2.PreferredAllocationResponse()
        view = self.manager.pool(self.pool)
        layout = view.layout if view is not None else DeviceLayout({})
        with metrics.kubelet_call(self.pool, "GetPreferredAllocation") as call:
            for container in request.container_requests:
                must = list(container.must_include_deviceIDs)
                try:
                    # The repeated field is a sequence already: no copy of thousands of IDs.
                    chosen = preferred_allocation(container.available_deviceIDs, must,
                                                  container.allocation_size, layout)
                except PreferredAllocationError as exc:
                    call.code = "INVALID_ARGUMENT"
                    self._log_call("GetPreferredAllocation", [], started, error=str(exc))
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"pool {self.pool}: {exc}")
                response.container_responses.add(deviceIDs=chosen)
                self._log_call("GetPreferredAllocation", chosen, started,
                               extra=f" must_include={','.join(must)}"
                                     f" available={len(container.available_deviceIDs)}")
        return response

    def Allocate(self, request: api_pb2.AllocateRequest,
                 context: grpc.ServicerContext) -> api_pb2.AllocateResponse:
        started = time.perf_counter()
        response = api_pb2.AllocateResponse()
        allocated: list[str] = []
        with metrics.kubelet_call(self.pool, "Allocate") as call:
            for container in request.container_requests:
                ids = list(container.devices_ids)
                try:
                    response.container_responses.append(self.allocator.allocate(self.pool, ids))
                except AllocateError as exc:
                    code = (grpc.StatusCode.INVALID_ARGUMENT if exc.invalid_argument
                            else grpc.StatusCode.INTERNAL)
                    call.code = code.name
                    self._log_call("Allocate", ids, started, error=str(exc))
                    context.abort(code, str(exc))
                self._log_call("Allocate", ids, started)
                allocated += ids
        # Listeners (ports prepared at Allocate) start once the answer is on its way, so
        # their work never delays the kubelet's call.
        announce = functools.partial(self.allocator.announce, self.pool, allocated)
        if not context.add_callback(announce):
            announce()
        return response

    def PreStartContainer(self, request: api_pb2.PreStartContainerRequest,
                          context: grpc.ServicerContext) -> api_pb2.PreStartContainerResponse:
        return api_pb2.PreStartContainerResponse()

    # --- internals ---

    def _response(self, view: PoolView) -> api_pb2.ListAndWatchResponse:
        # Several streams (an old and a new kubelet) may ask for the same generation.
        with self._cache_lock:
            if self._cached is None or self._cached[0] != view.generation:
                self._cached = (view.generation, list_response(view))
            return self._cached[1]

    def _log_call(self, call: str, device_ids: list[str], started: float, error: str = "",
                  extra: str = "") -> None:
        duration_ms = (time.perf_counter() - started) * 1000
        nodes = sorted({str(n) for n in map(self.manager.numa_node, device_ids)
                        if n is not None})
        fields = {"call": call, "pool": self.pool, "device_ids": ",".join(device_ids),
                  "numa": ",".join(nodes), "duration_ms": round(duration_ms, 3)}
        if error:
            log.warning("kubelet call=%s pool=%s device_ids=%s numa=%s duration_ms=%.3f "
                        "result=error error=%r", call, self.pool, fields["device_ids"],
                        fields["numa"], duration_ms, error, extra={"numanet": fields})
        else:
            log.info("kubelet call=%s pool=%s device_ids=%s numa=%s duration_ms=%.3f "
                     "result=ok%s", call, self.pool, fields["device_ids"], fields["numa"],
                     duration_ms, extra, extra={"numanet": fields})


def _remove_stale_socket(path: Path) -> None:
    try:
        remove_socket_file(path, refuse_other=True)
    except NotASocket as exc:
        raise OSError(f"{path} exists and is not a socket: remove it by hand") from exc
