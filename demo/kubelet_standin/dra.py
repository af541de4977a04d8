"""A stand-in for the kubelet's DRA side: the plugin watcher's registration of DRA plugins
and the DRA manager's Prepare/Unprepare, over real gRPC, written from the kubelet's code
(pkg/kubelet/pluginmanager, pkg/kubelet/cm/dra).

What it does, as the kubelet does:

- plugin watcher: finds sockets in ``<kubelet-dir>/plugins_registry/`` (also those there
  before it started), dials each, asks ``GetInfo`` (1 s timeout); a type other than
  ``DRAPlugin`` is answered ``NotifyRegistrationStatus(false, ...)``; an empty endpoint
  means the registration socket itself; the service is the first of the plugin's
  ``supported_versions`` the kubelet knows (``v1.DRAPlugin``, ``v1beta1.DRAPlugin``), none
  known is refused; an endpoint already registered for the driver is refused; then
  ``NotifyRegistrationStatus(true)``. A socket that goes away deregisters the plugin, a
  new socket (new inode) registers it again;
- preparing a pod: each claim is read from the API server, must be allocated and reserved
  for the pod (``status.reservedFor``), its drivers registered; a claim with the same
  name and another UID than one it holds is refused; claims already prepared are not
  sent again; one ``NodePrepareResources`` per driver with the claims (namespace, uid,
  name); an ``error`` in a claim's answer, an answer for a claim it did not send, or a
  claim left out fail the pod; the devices and their CDI IDs are kept per claim and
  checkpointed (``dra_manager_state``);
- unpreparing a pod: claims other pods still use only lose the reference; the others go
  in one ``NodeUnprepareResources`` per driver, with the same error rules, and are
  forgotten;
- restart: registrations and connections go, the checkpoint stays, but whether a claim
  was prepared is not checkpointed: the next pod start prepares it again (plugins must
  be idempotent), and the plugin watcher registers the sockets it finds.

``pod_dynamic_resources()`` hands the prepared claims to the pod-resources stand-in in its
record type (``DynamicAllocation``).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from demo.kubelet_standin.podresources import DynamicAllocation
from protos.dra.v1 import api_pb2 as v1_pb2
from protos.dra.v1 import api_pb2_grpc as v1_grpc
from protos.dra.v1beta1 import api_pb2 as v1beta1_pb2
from protos.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from protos.pluginregistration.v1 import api_pb2 as reg_pb2
from protos.pluginregistration.v1 import api_pb2_grpc as reg_grpc

log = logging.getLogger(__name__)

KUBELET_SERVICES = ("v1.DRAPlugin", "v1beta1.DRAPlugin")  # what this kubelet can call
REGISTRY_SUBDIR = "plugins_registry"
STATE_FILE = "dra_manager_state"
CALL_TIMEOUT_S = 45.0  # the kubelet's defaultClientCallTimeout

ClaimReader = Callable[[str, str], dict[str, Any] | None]


class DraStandinError(RuntimeError):
    """The stand-in kubelet could not prepare or unprepare a pod; says why."""


@dataclass
class DraRegistration:
    driver: str
    endpoint: str
    service: str
    socket: str
    identity: tuple[int, int]
    at: float
    channel: grpc.Channel | None = field(default=None, repr=False)


@dataclass
class ClaimInfo:
    namespace: str
    name: str
    uid: str
    drivers: tuple[str, ...]
    pods: set[str] = field(default_factory=set)
    devices: list[dict[str, Any]] = field(default_factory=list)  # driver, pool, device, cdi
    prepared: bool = False  # not checkpointed, as in the kubelet


class DraKubeletStandin:
    def __init__(self, kubelet_dir: Path, read_claim: ClaimReader,
                 services: Sequence[str] = KUBELET_SERVICES, poll_interval: float = 0.05,
                 state_dir: Path | None = None) -> None:
        self.kubelet_dir = Path(kubelet_dir)
        self.registry = self.kubelet_dir / REGISTRY_SUBDIR
        self.read_claim = read_claim
        self.services = tuple(services)
        self.poll_interval = poll_interval
        self.state_path = (state_dir or self.kubelet_dir) / STATE_FILE
        self.registrations: dict[str, DraRegistration] = {}  # driver -> newest
        self.refusals: list[tuple[str, str]] = []  # (socket, error)
        self.calls: list[tuple[str, str, int]] = []  # (rpc, service, claims)
        self._claims: dict[tuple[str, str], ClaimInfo] = {}
        self._seen: dict[str, tuple[int, int]] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    def start(self) -> DraKubeletStandin:
        self.registry.mkdir(parents=True, exist_ok=True)
        self._load()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="dra-pluginwatcher",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            for reg in self.registrations.values():
                if reg.channel is not None:
                    reg.channel.close()
            self.registrations.clear()
            self._seen.clear()

    def restart(self) -> None:
        self.stop()
        with self._lock:
            self._claims.clear()
        self.start()

    def wait_registered(self, driver: str, timeout: float = 5.0) -> DraRegistration:
        deadline = time.monotonic() + timeout
        with self._changed:
            while driver not in self.registrations:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DraStandinError(f"DRA driver {driver} did not register within "
                                          f"{timeout} s; refusals: {self.refusals}")
                self._changed.wait(left)
            return self.registrations[driver]

    # --- plugin watcher ---

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self._scan()
            except Exception:  # noqa: BLE001 - the watcher keeps going, as the kubelet's
                log.exception("plugin watcher round failed")
            self._stop.wait(self.poll_interval)

    def _scan(self) -> None:
        present: dict[str, tuple[int, int]] = {}
        for entry in os.scandir(self.registry):
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISSOCK(info.st_mode):
                present[entry.path] = (info.st_dev, info.st_ino)
        for path in [p for p in self._seen if p not in present]:
            self._deregister(path)
        for path, identity in present.items():
            if self._seen.get(path) != identity:
                self._seen[path] = identity
                self._register(path, identity)

    def _register(self, path: str, identity: tuple[int, int]) -> None:
        channel = grpc.insecure_channel(f"unix:{path}")
        try:
            stub = reg_grpc.RegistrationStub(channel)
            info = stub.GetInfo(reg_pb2.InfoRequest(), timeout=1.0, wait_for_ready=True)

            def refuse(error: str) -> None:
                self.refusals.append((path, error))
                stub.NotifyRegistrationStatus(reg_pb2.RegistrationStatus(
                    plugin_registered=False, error=error), timeout=5.0)

            if info.type != "DRAPlugin":
                refuse(f"RegisterPlugin error -- no handler registered for plugin type: "
                       f"{info.type} at socket {path}")
                return
            if not info.supported_versions:
                refuse("empty list of supported gRPC services (aka supported versions)")
                return
            service = next((s for s in info.supported_versions if s in self.services), None)
            if service is None:
                refuse(f"none of services supported by the plugin "
                       f"({list(info.supported_versions)}) are supported by the kubelet "
                       f"({list(self.services)})")
                return
            endpoint = info.endpoint or path
            with self._lock:
                old = self.registrations.get(info.name)
                if old is not None and old.endpoint == endpoint and old.socket != path:
                    refuse(f"endpoint {endpoint} already registered for DRA driver plugin "
                           f"{info.name}")
                    return
                if old is not None and old.channel is not None:
                    old.channel.close()
                self.registrations[info.name] = DraRegistration(
                    info.name, endpoint, service, path, identity, time.monotonic(),
                    grpc.insecure_channel(f"unix:{endpoint}"))
                self._changed.notify_all()
            stub.NotifyRegistrationStatus(reg_pb2.RegistrationStatus(plugin_registered=True),
                                          timeout=5.0)
        except grpc.RpcError as exc:
            self.refusals.append((path, f"RegisterPlugin error -- {exc.code().name}"))
        finally:
            channel.close()

    def _deregister(self, path: str) -> None:
        self._seen.pop(path, None)
        with self._lock:
            for driver, reg in list(self.registrations.items()):
                if reg.socket == path:
                    if reg.channel is not None:
                        reg.channel.close()
                    del self.registrations[driver]
            self._changed.notify_all()

    # --- DRA manager ---

    def prepare_pod(self, namespace: str, pod: str, pod_uid: str,
                    claims: Sequence[str]) -> dict[str, list[str]]:
        """Prepare the pod's claims; returns claim name -> CDI device IDs."""
        infos: list[tuple[dict[str, Any], ClaimInfo]] = []
        for claim_name in claims:
            claim = self.read_claim(namespace, claim_name)
            if claim is None:
                raise DraStandinError(f"fetch ResourceClaim {claim_name}: not found")
            status = claim.get("status") or {}
            if not any(r.get("resource") == "pods" and r.get("uid") == pod_uid
                       for r in status.get("reservedFor") or []):
                raise DraStandinError(f"pod {pod} ({pod_uid}) is not allowed to use "
                                      f"ResourceClaim {claim_name} ({claim['metadata']['uid']})")
            allocation = status.get("allocation")
            if not allocation:
                raise DraStandinError(f"ResourceClaim {claim_name}: not allocated")
            drivers = tuple(sorted({r["driver"] for r in
                                    (allocation.get("devices") or {}).get("results") or []}))
            with self._lock:
                for driver in drivers:
                    if driver not in self.registrations:
                        raise DraStandinError(f"DRA driver {driver} is not registered")
            infos.append((claim, ClaimInfo(namespace, claim_name, claim["metadata"]["uid"],
                                           drivers)))
        batches: dict[str, list[ClaimInfo]] = {}
        with self._lock:
            for _, info in infos:
                cached = self._claims.get((namespace, info.name))
                if cached is None:
                    self._claims[(namespace, info.name)] = cached = info
                elif cached.uid != info.uid:
                    raise DraStandinError(f"old ResourceClaim with same name {info.name} and "
                                          f"different UID {cached.uid} still exists")
                cached.pods.add(pod_uid)
                self._save()
                if cached.prepared:
                    continue
                cached.devices = []
                for driver in cached.drivers:
                    batches.setdefault(driver, []).append(cached)
        for driver, batch in batches.items():
            response = self._call(driver, "NodePrepareResources", batch)
            sent = {c.uid: c for c in batch}
            for uid, result in response.claims.items():
                if uid not in sent:
                    raise DraStandinError(f"NodePrepareResources returned result for unknown "
                                          f"claim UID {uid}")
                if result.error:
                    raise DraStandinError(f"NodePrepareResources failed for ResourceClaim "
                                          f"{sent[uid].name}: {result.error}")
                with self._lock:
                    sent[uid].devices += [
                        {"driver": driver, "pool": d.pool_name, "device": d.device_name,
                         "requests": list(d.request_names), "cdi": list(d.cdi_device_ids)}
                        for d in result.devices]
            if len(batch) != len(response.claims):
                raise DraStandinError(f"NodePrepareResources skipped "
                                      f"{len(batch) - len(response.claims)} ResourceClaims")
        with self._lock:
            for _, info in infos:
                self._claims[(namespace, info.name)].prepared = True
            self._save()
            return {info.name: [c for d in self._claims[(namespace, info.name)].devices
                                for c in d["cdi"]] for _, info in infos}

    def unprepare_pod(self, namespace: str, pod_uid: str) -> None:
        batches: dict[str, list[ClaimInfo]] = {}
        with self._lock:
            for info in [c for c in self._claims.values()
                         if c.namespace == namespace and pod_uid in c.pods]:
                if len(info.pods) > 1:
                    info.pods.discard(pod_uid)
                    continue
                for driver in info.drivers:
                    batches.setdefault(driver, []).append(info)
        for driver, batch in batches.items():
            response = self._call(driver, "NodeUnprepareResources", batch)
            sent = {c.uid: c for c in batch}
            for uid, result in response.claims.items():
                if uid not in sent:
                    raise DraStandinError(f"NodeUnprepareResources returned result for unknown "
                                          f"claim UID {uid}")
                if result.error:
                    raise DraStandinError(f"NodeUnprepareResources failed for ResourceClaim "
                                          f"{sent[uid].name}: {result.error}")
            if len(batch) != len(response.claims):
                raise DraStandinError(f"NodeUnprepareResources skipped "
                                      f"{len(batch) - len(response.claims)} ResourceClaims")
        with self._lock:
            for batch in batches.values():
                for info in batch:
                    self._claims.pop((info.namespace, info.name), None)
            self._save()

    def claim(self, namespace: str, name: str) -> ClaimInfo | None:
        with self._lock:
            return self._claims.get((namespace, name))

    def pod_dynamic_resources(self, pods: Mapping[str, tuple[str, str, str]]
                              ) -> list[DynamicAllocation]:
        """What pod-resources lists: ``pods`` maps pod UID -> (namespace, name, container)."""
        out = []
        with self._lock:
            for info in self._claims.values():
                if not info.prepared:
                    continue
                for uid in info.pods:
                    if uid not in pods:
                        continue
                    namespace, pod, container = pods[uid]
                    for device in info.devices:
                        out.append(DynamicAllocation(
                            namespace, pod, container, info.name, info.namespace,
                            device["driver"], device["pool"], device["device"],
                            tuple(device["cdi"])))
        return out

    # --- internals ---

    def _call(self, driver: str, rpc: str, claims: list[ClaimInfo]) -> Any:
        with self._lock:
            reg = self.registrations.get(driver)
            if reg is None or reg.channel is None:
                raise DraStandinError(f"DRA driver {driver} is not registered")
            service, channel = reg.service, reg.channel
        pb2, grpc_mod = ((v1_pb2, v1_grpc) if service == "v1.DRAPlugin"
                         else (v1beta1_pb2, v1beta1_grpc))
        request_type = (pb2.NodePrepareResourcesRequest if rpc == "NodePrepareResources"
                        else pb2.NodeUnprepareResourcesRequest)
        request = request_type(claims=[pb2.Claim(namespace=c.namespace, uid=c.uid, name=c.name)
                                       for c in claims])
        self.calls.append((rpc, service, len(claims)))
        try:
            return getattr(grpc_mod.DRAPluginStub(channel), rpc)(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise DraStandinError(f"{rpc}: {exc.code().name}: {exc.details()}") from None

    def _save(self) -> None:
        doc = [{"namespace": c.namespace, "name": c.name, "uid": c.uid,
                "drivers": list(c.drivers), "pods": sorted(c.pods), "devices": c.devices}
               for c in self._claims.values()]
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.state_path)

    def _load(self) -> None:
        if not self.state_path.exists():
            return
        with self._lock:
            for c in json.loads(self.state_path.read_text()):
                self._claims[(c["namespace"], c["name"])] = ClaimInfo(
                    c["namespace"], c["name"], c["uid"], tuple(c["drivers"]), set(c["pods"]),
                    c["devices"])
