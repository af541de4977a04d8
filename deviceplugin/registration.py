"""Register one device plugin endpoint with the kubelet's Registration service."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from protos.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc

API_VERSION = "v1beta1"
KUBELET_SOCKET_NAME = "kubelet.sock"
DEVICE_PLUGINS_SUBDIR = "device-plugins"


class RegistrationError(RuntimeError):
    """The kubelet could not be reached or refused the registration; the message says which."""


def plugin_options() -> api_pb2.DevicePluginOptions:
    """What numanet asks of the kubelet: preferred allocation yes, PreStartContainer no."""
    return api_pb2.DevicePluginOptions(pre_start_required=False,
                                       get_preferred_allocation_available=True)


def socket_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a socket file, None when it is gone: a re-created socket differs."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def register(kubelet_socket: Path, endpoint: str, resource: str, timeout: float = 5.0) -> None:
    """Register ``resource`` served on ``endpoint`` (a file name in the kubelet's directory)."""
    if "/" in endpoint:
        raise ValueError(f"endpoint {endpoint!r} must be a file name in the kubelet's "
                         "device-plugins directory, not a path")
    # No channel_ready_future: its connectivity poller makes close() take 200 ms. A plain
    # call fails fast with UNAVAILABLE when nobody listens, and the caller retries.
    channel = grpc.insecure_channel(f"unix:{kubelet_socket}")
    request = api_pb2.RegisterRequest(version=API_VERSION, endpoint=endpoint,
                                      resource_name=resource, options=plugin_options())
    try:
        api_pb2_grpc.RegistrationStub(channel).Register(request, timeout=timeout)
    except grpc.RpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise RegistrationError(f"kubelet registration socket {kubelet_socket} does not "
                                    f"answer ({exc.code().name}): is the kubelet running?") \
                from None
        raise RegistrationError(f"kubelet refused to register {resource} at {endpoint}: "
                                f"{exc.code().name}: {exc.details()}") from None
    finally:
        channel.close()
