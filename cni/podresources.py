"""Asks the kubelet (pod-resources API v1) which devices it allocated to a pod.

This is the check that keeps one pod from plumbing another pod's slot: a device ID in a
network config is only trusted when the kubelet lists it for that pod and resource.
``Get`` is used when the kubelet serves it; a kubelet without it (UNIMPLEMENTED, or the
``KubeletPodResourcesGet`` gate off, which answers UNKNOWN "...Get method disabled")
is asked with ``List`` from then on.

A device allocated through DRA (dra/) is in the container's ``dynamic_resources``: each
claim's devices with driver, pool and device name as the ResourceSlice published them.
It counts as the resource ``<driver>/<pool>`` (the pool part after the node's ``/``),
device ``<device name>`` read back into the slot ID: for numanet's driver exactly the
resource name and device ID a device-plugin allocation has.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc

from cni import errors
from cni.errors import CniError
from deviceplugin import naming
from protos.podresources.v1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)

SOCKET_SUBPATH = Path("pod-resources") / "kubelet.sock"
_MAX_MESSAGE = 16 << 20  # List on a big node is large; the kubelet's own clients use 16 MiB
# The channel to the local kubelet stays connected (it costs nothing on a unix socket) so
# that an ADD never pays the ~10 ms of connecting; after a kubelet restart it reconnects
# within a second instead of gRPC's default backoff, which grows to two minutes and
# fails every call made meanwhile.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.client_idle_timeout_ms", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def socket_path(kubelet_dir: Path) -> Path:
    return Path(kubelet_dir) / SOCKET_SUBPATH


class PodResourcesClient:
    """A long-lived channel to the kubelet's pod-resources socket; safe to share by threads.

    Calls wait (up to ``timeout``) for the channel while it (re)connects, rather than
    failing at once: a kubelet that restarts is asked again as soon as it is back.
    """

    def __init__(self, socket: Path, timeout: float = 5.0) -> None:
        self.socket = Path(socket)
        self.timeout = timeout
        self._channel: grpc.Channel | None = None
        self._stub: api_pb2_grpc.PodResourcesListerStub | None = None
        self._use_list = False
        self._lock = threading.Lock()
        self._warming: grpc.Future | None = None

    def close(self) -> None:
        with self._lock:
            if self._warming is not None:
                self._warming.cancel()
            if self._channel is not None:
                self._channel.close()
            self._channel = self._stub = self._warming = None

    def connect(self) -> None:
        """Start connecting now, in the background, so the first call does not wait."""
        self._get_stub()
        with self._lock:
            if self._channel is not None and self._warming is None:
                self._warming = grpc.channel_ready_future(self._channel)

    def _get_stub(self) -> api_pb2_grpc.PodResourcesListerStub:
        with self._lock:
            if self._stub is None:
                self._channel = grpc.insecure_channel(f"unix://{self.socket}",
                                                      options=_CHANNEL_OPTIONS)
                self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)
            return self._stub

    def pod_devices(self, namespace: str, name: str) -> dict[str, set[str]] | None:
        """resource name -> device IDs the kubelet gave the pod; None when it knows no such pod."""
        stub = self._get_stub()
        if not self._use_list:
            try:
                reply = stub.Get(api_pb2.GetPodResourcesRequest(pod_name=name,
                                                                pod_namespace=namespace),
                                 timeout=self.timeout, wait_for_ready=True)
                return _devices(reply.pod_resources)
            except grpc.RpcError as exc:
                if _get_unsupported(exc):
                    log.info("kubelet pod-resources Get not available, using List socket=%s",
                             self.socket)
                    self._use_list = True
                elif _not_found(exc):
                    return None
                else:
                    raise _unreachable(self.socket, exc) from None
        try:
            reply = stub.List(api_pb2.ListPodResourcesRequest(), timeout=self.timeout,
                              wait_for_ready=True)
        except grpc.RpcError as exc:
            raise _unreachable(self.socket, exc) from None
        for pod in reply.pod_resources:
            if pod.namespace == namespace and pod.name == name:
                return _devices(pod)
        return None

    def held_devices(self) -> set[tuple[str, str]]:
        """(resource, device ID) of every device the kubelet lists for any pod (``List``)."""
        try:
            reply = self._get_stub().List(api_pb2.ListPodResourcesRequest(), timeout=self.timeout,
                                          wait_for_ready=True)
        except grpc.RpcError as exc:
            raise _unreachable(self.socket, exc) from None
        return {(resource, device_id) for pod in reply.pod_resources
                for resource, ids in _devices(pod).items() for device_id in ids}

    def check_allocated(self, namespace: str, name: str, resource: str, device_id: str) -> None:
        """Raise DEVICE_NOT_ALLOCATED unless the kubelet gave ``device_id`` of ``resource``
        to the pod ``namespace/name``."""
        devices = self.pod_devices(namespace, name)
        if devices is None:
            raise CniError(errors.DEVICE_NOT_ALLOCATED,
                           f"pod {namespace}/{name} is not known to the kubelet, so device "
                           f"{device_id} cannot be checked as its own",
                           "the pod must be admitted on this node with the resource "
                           f"{resource} in its requests")
        if device_id not in devices.get(resource, set()):
            held = sorted(devices.get(resource, set()))
            raise CniError(errors.DEVICE_NOT_ALLOCATED,
                           f"device {device_id} of {resource} is not allocated to pod "
                           f"{namespace}/{name}",
                           f"the kubelet gave this pod {', '.join(held) if held else 'none'} of "
                           f"{resource}; use one of those (Multus passes it as deviceID)")


def _devices(pod: api_pb2.PodResources) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for container in pod.containers:
        for dev in container.devices:
            out.setdefault(dev.resource_name, set()).update(dev.device_ids)
        for claim in container.dynamic_resources:
            for res in claim.claim_resources:
                try:
                    device_id = naming.device_id_of_dra_name(res.device_name)
                except naming.InvalidName:
                    continue  # another driver's device
                resource = naming.resource_name(res.driver_name,
                                                naming.pool_of_dra_pool(res.pool_name))
                out.setdefault(resource, set()).add(device_id)
    return out


def _get_unsupported(exc: grpc.RpcError) -> bool:
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    return code == grpc.StatusCode.UNIMPLEMENTED or "Get method disabled" in details


def _not_found(exc: grpc.RpcError) -> bool:
    # The kubelet answers an unknown pod with a plain error: UNKNOWN "pod X in namespace Y
    # not found" (NOT_FOUND accepted as well, should it ever use the proper code).
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    return code == grpc.StatusCode.NOT_FOUND or (code == grpc.StatusCode.UNKNOWN
                                                 and "not found" in details)


def _unreachable(socket: Path, exc: grpc.RpcError) -> CniError:
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or str(exc)
    if not socket.is_socket():
        # gRPC only says DEADLINE_EXCEEDED here; what a user needs is where numanet looked.
        what = "is not a socket" if socket.exists() else "does not exist"
        return CniError(errors.TRY_AGAIN_LATER,
                        f"kubelet pod-resources socket {socket} {what}",
                        "numanet checks every device ID with the kubelet's pod-resources API; "
                        "start the kubelet, or point the agent's --kubelet-dir at the kubelet's "
                        "root directory (mounted into the agent's pod); the runtime retries")
    return CniError(errors.TRY_AGAIN_LATER,
                    f"kubelet pod-resources API at {socket} did not answer "
                    f"({code.name if code else 'error'}: {details[:200]})",
                    "numanet checks every device ID with the kubelet; it retries when the "
                    "kubelet is back")
