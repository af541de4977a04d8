"""The kubelet DRA plugin: registration through the plugin watcher and the DRA service.

Two unix sockets, as the kubelet's DRA plugins have:

- ``<kubelet-dir>/plugins_registry/<driver>-reg.sock`` serves pluginregistration v1
  ``Registration``: the kubelet's plugin watcher finds the socket, asks ``GetInfo`` (type
  ``DRAPlugin``, the driver name, the DRA endpoint and the services it serves, newest
  first: ``v1.DRAPlugin``, ``v1beta1.DRAPlugin``; the kubelet takes the first it knows)
  and tells the outcome with ``NotifyRegistrationStatus``;
- ``<kubelet-dir>/plugins/<driver>/dra.sock`` serves ``DRAPlugin`` v1 and v1beta1
  (``NodePrepareResources``, ``NodeUnprepareResources``), both answered by ``Preparer``.

A socket that vanishes (the kubelet's directory was cleaned) is served again, and the
plugin watcher then registers the plugin anew. Every call is logged on one line with the
claims, devices and duration.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from deviceplugin.allocate import Allocator
from deviceplugin.registration import socket_identity
from dra.prepare import PrepareError, Preparer
from protos.dra.v1 import api_pb2 as v1_pb2
from protos.dra.v1 import api_pb2_grpc as v1_grpc
from protos.dra.v1beta1 import api_pb2 as v1beta1_pb2
from protos.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from protos.pluginregistration.v1 import api_pb2 as reg_pb2
from protos.pluginregistration.v1 import api_pb2_grpc as reg_grpc
from vswitch.sockfiles import NotASocket, remove_socket_file

log = logging.getLogger(__name__)

PLUGIN_TYPE = "DRAPlugin"
SUPPORTED_SERVICES = ("v1.DRAPlugin", "v1beta1.DRAPlugin")  # newest first
REGISTRY_SUBDIR = "plugins_registry"
PLUGINS_SUBDIR = "plugins"
DRA_SOCKET_NAME = "dra.sock"
_WATCH_INTERVAL_S = 0.5


def registration_socket(kubelet_dir: Path, driver: str) -> Path:
    return Path(kubelet_dir) / REGISTRY_SUBDIR / f"{driver}-reg.sock"


def dra_socket(kubelet_dir: Path, driver: str) -> Path:
    return Path(kubelet_dir) / PLUGINS_SUBDIR / driver / DRA_SOCKET_NAME


@dataclass(frozen=True)
class RegistrationState:
    registered: bool
    error: str
    at: float


class _DraService:
    """NodePrepareResources / NodeUnprepareResources for one API version's messages."""

    def __init__(self, pb2: ModuleType, preparer: Preparer, allocator: Allocator,
                 version: str) -> None:
        self.pb2 = pb2
        self.preparer = preparer
        self.allocator = allocator
        self.version = version

    def NodePrepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        started = time.perf_counter()
        response = self.pb2.NodePrepareResourcesResponse()
        announce: list[tuple[str, tuple[str, ...]]] = []
        for claim in request.claims:
            entry = response.claims[claim.uid]
            try:
                prepared = self.preparer.prepare(claim.namespace, claim.name, claim.uid)
            except PrepareError as exc:
                entry.error = str(exc)
                _log_call("NodePrepareResources", self.version, claim, [], started, str(exc))
                continue
            for device in prepared.claim.devices:
                entry.devices.add(request_names=[device.request] if device.request else [],
                                  pool_name=device.dra_pool, device_name=device.device_name,
                                  cdi_device_ids=list(device.cdi_device_ids))
            announce += prepared.announce
            _log_call("NodePrepareResources", self.version, claim,
                      [d.device_id for d in prepared.claim.devices], started)
        # Ports prepared at Allocate (cni/prepare.py) start once the answer is on its way.
        for pool, ids in announce:
            call = functools.partial(self.allocator.announce, pool, ids)
            if not context.add_callback(call):
                call()
        return response

    def NodeUnprepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        started = time.perf_counter()
        response = self.pb2.NodeUnprepareResourcesResponse()
        for claim in request.claims:
            entry = response.claims[claim.uid]
            try:
                self.preparer.unprepare(claim.uid)
            except Exception as exc:  # noqa: BLE001 - one claim's failure is its own entry
                entry.error = (f"cannot unprepare ResourceClaim {claim.namespace}/"
                               f"{claim.name}: {exc}")
                _log_call("NodeUnprepareResources", self.version, claim, [], started,
                          entry.error)
                continue
            _log_call("NodeUnprepareResources", self.version, claim, [], started)
        return response


def _log_call(call: str, version: str, claim: Any, device_ids: list[str], started: float,
              error: str = "") -> None:
    duration_ms = (time.perf_counter() - started) * 1000
    if error:
        log.warning("kubelet call=%s api=%s claim=%s/%s uid=%s duration_ms=%.3f result=error "
                    "error=%r", call, version, claim.namespace, claim.name, claim.uid,
                    duration_ms, error)
    else:
        log.info("kubelet call=%s api=%s claim=%s/%s uid=%s device_ids=%s duration_ms=%.3f "
                 "result=ok", call, version, claim.namespace, claim.name, claim.uid,
                 ",".join(device_ids), duration_ms)


class _Registration(reg_grpc.RegistrationServicer):
    def __init__(self, plugin: DraPlugin) -> None:
        self.plugin = plugin

    def GetInfo(self, request: reg_pb2.InfoRequest,  # noqa: N802
                context: grpc.ServicerContext) -> reg_pb2.PluginInfo:
        return reg_pb2.PluginInfo(type=PLUGIN_TYPE, name=self.plugin.driver,
                                  endpoint=str(self.plugin.dra_socket),
                                  supported_versions=list(SUPPORTED_SERVICES))

    def NotifyRegistrationStatus(self, request: reg_pb2.RegistrationStatus,  # noqa: N802
                                 context: grpc.ServicerContext
                                 ) -> reg_pb2.RegistrationStatusResponse:
        self.plugin.set_registration(request.plugin_registered, request.error)
        return reg_pb2.RegistrationStatusResponse()


class _Socket:
    """One gRPC server on one unix socket, restartable."""

    def __init__(self, path: Path, add: Callable[[grpc.Server], None], name: str,
                 workers: int) -> None:
        self.path = path
        self._add = add
        self._name = name
        self._workers = workers
        self._server: grpc.Server | None = None
        self.identity: tuple[int, int] | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            remove_socket_file(self.path, refuse_other=True)
        except NotASocket as exc:
            raise OSError(f"{self.path} exists and is not a socket: remove it by hand") from exc
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._workers,
                                                        thread_name_prefix=self._name),
                             options=[("grpc.so_reuseport", 0)])
        self._add(server)
        if server.add_insecure_port(f"unix:{self.path}") == 0:
            raise OSError(f"cannot listen on {self.path}")
        server.start()
        self.path.chmod(0o600)  # only the kubelet (root) talks to it
        self._server = server
        self.identity = socket_identity(self.path)

    def stop(self, grace: float = 0.5) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()
        if self.identity is not None and socket_identity(self.path) == self.identity:
            self.path.unlink(missing_ok=True)
        self.identity = None

    def intact(self) -> bool:
        return self.identity is not None and socket_identity(self.path) == self.identity


class DraPlugin:
    """The DRA service and its registration socket, kept served while the agent runs."""

    def __init__(self, preparer: Preparer, allocator: Allocator, kubelet_dir: Path,
                 driver: str, on_registered: Callable[[], None] | None = None) -> None:
        self.driver = driver
        self.dra_socket = dra_socket(kubelet_dir, driver)
        self.registration_socket = registration_socket(kubelet_dir, driver)
        self._on_registered = on_registered
        self._state: RegistrationState | None = None
        self._registered = threading.Event()
        v1 = _DraService(v1_pb2, preparer, allocator, "v1")
        v1beta1 = _DraService(v1beta1_pb2, preparer, allocator, "v1beta1")

        def add_dra(server: grpc.Server) -> None:
            v1_grpc.add_DRAPluginServicer_to_server(v1, server)  # type: ignore[arg-type]
            v1beta1_grpc.add_DRAPluginServicer_to_server(v1beta1, server)  # type: ignore[arg-type]

        def add_registration(server: grpc.Server) -> None:
            reg_grpc.add_RegistrationServicer_to_server(_Registration(self), server)

        self._dra = _Socket(self.dra_socket, add_dra, "dra", 8)
        self._reg = _Socket(self.registration_socket, add_registration, "dra-reg", 2)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # The DRA socket first: the kubelet dials it as soon as it registers us.
        self._dra.start()
        self._reg.start()
        log.info("DRA plugin serving driver=%s endpoint=%s registration=%s", self.driver,
                 self.dra_socket, self.registration_socket)
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="dra-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        # Registration first: the plugin watcher deregisters us when it goes.
        self._reg.stop()
        self._dra.stop()

    @property
    def registered(self) -> bool:
        return self._registered.is_set()

    def wait_registered(self, timeout: float) -> bool:
        return self._registered.wait(timeout)

    def state(self) -> RegistrationState | None:
        return self._state

    def set_registration(self, registered: bool, error: str) -> None:
        self._state = RegistrationState(registered, error, time.time())
        if registered:
            self._registered.set()
            log.info("registered with kubelet driver=%s endpoint=%s", self.driver,
                     self.dra_socket)
            if self._on_registered is not None:
                self._on_registered()
        else:
            self._registered.clear()
            log.warning("kubelet refused the DRA plugin driver=%s error=%r", self.driver, error)

    def _watch(self) -> None:
        while not self._stop.wait(_WATCH_INTERVAL_S):
            try:
                for sock, what in ((self._dra, "DRA"), (self._reg, "registration")):
                    if not sock.intact():
                        log.info("%s socket vanished, serving it again path=%s", what,
                                 sock.path)
                        if sock is self._reg:
                            self._registered.clear()
                        sock.stop(grace=0)
                        sock.start()
            except Exception:  # the watch must survive anything one round throws
                log.exception("DRA plugin watch round failed")
