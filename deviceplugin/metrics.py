"""The device plugin's metrics: the kubelet's calls, counted and timed per pool.

On prometheus_client's default registry; the agent serves it (``agent.metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

# Kubelet calls take from under a millisecond to seconds.
KUBELET_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

KUBELET_CALLS = Counter(
    "numanet_kubelet_calls", "Device plugin API calls from the kubelet.",
    ("pool", "method", "code"))
KUBELET_DURATION = Histogram(
    "numanet_kubelet_call_duration_seconds", "Time to answer a kubelet device plugin call.",
    ("pool", "method"), buckets=KUBELET_BUCKETS)


@dataclass
class KubeletCall:
    code: str = "OK"  # a gRPC status name: OK, INVALID_ARGUMENT, ...


@contextmanager
def kubelet_call(pool: str, method: str) -> Iterator[KubeletCall]:
    """Time and count one kubelet call; an escaping exception counts as code UNKNOWN
    unless the body already set ``call.code``."""
    call = KubeletCall()
    start = time.perf_counter()
    try:
        yield call
    except BaseException:
        if call.code == "OK":
            call.code = "UNKNOWN"
        raise
    finally:
        KUBELET_CALLS.labels(pool, method, call.code).inc()
        KUBELET_DURATION.labels(pool, method).observe(time.perf_counter() - start)
