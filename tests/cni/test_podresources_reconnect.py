"""The pod-resources client across kubelet restarts: connected before the first call, and
asking again as soon as the kubelet is back (gRPC's default reconnect backoff would fail
every call for seconds, up to two minutes after a long outage)."""

from __future__ import annotations

import time

import pytest

from cni import errors
from cni.errors import CniError
from cni.podresources import PodResourcesClient, socket_path
from demo.kubelet_standin.podresources import PodAllocation, PodResourcesStandIn

RES = "numanet.io/vhostuser-ovs"
DEVICE = "vhostuser-ovs-n0-000"
PODS = [PodAllocation("default", "pod-a", "app", RES, (DEVICE,), (0,))]


def test_a_call_right_after_a_kubelet_restart_succeeds(tmp_path):
    path = socket_path(tmp_path)
    kubelet = PodResourcesStandIn(path, PODS).start()
    client = PodResourcesClient(path, timeout=2.0)
    try:
        client.connect()
        client.check_allocated("default", "pod-a", RES, DEVICE)
        kubelet.stop()
        # While the kubelet is down, calls fail (the runtime retries)...
        with pytest.raises(CniError) as down:
            client.check_allocated("default", "pod-a", RES, DEVICE)
        assert down.value.code == errors.TRY_AGAIN_LATER
        # ...and once it is back, the next call gets through instead of failing until
        # the channel's next reconnect attempt.
        kubelet = PodResourcesStandIn(path, PODS).start()
        started = time.monotonic()
        client.check_allocated("default", "pod-a", RES, DEVICE)
        assert time.monotonic() - started < 1.9
    finally:
        client.close()
        kubelet.stop()


def test_connect_to_a_missing_kubelet_does_not_block_or_leak(tmp_path):
    client = PodResourcesClient(socket_path(tmp_path), timeout=0.3)
    started = time.monotonic()
    client.connect()
    assert time.monotonic() - started < 0.5
    with pytest.raises(CniError):
        client.check_allocated("default", "pod-a", RES, DEVICE)
    client.close()
    client.close()  # twice is fine (the agent's stop and a test teardown)
