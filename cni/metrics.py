"""The CNI service's metrics: calls by command and code, and the fate of prepared ports.

On prometheus_client's default registry; the agent serves it (``agent.metrics``).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# A CNI call includes a vSwitch transaction and an IPAM exec.
CNI_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CNI_CALLS = Counter(
    "numanet_cni_calls", "CNI calls served; code 0 is success, else the CNI error code.",
    ("command", "code"))
CNI_DURATION = Histogram(
    "numanet_cni_call_duration_seconds", "Time to serve a CNI call in the agent.",
    ("command",), buckets=CNI_BUCKETS)
PREPARED_PORTS = Counter(
    "numanet_prepared_ports",
    "Ports prepared at Allocate, by outcome: prepared; failed (the ADD makes the port); "
    "claimed by the pod's ADD; removed, no pod having come for it.", ("pool", "outcome"))


def observe_cni_call(command: str, code: str | int, seconds: float) -> None:
    CNI_CALLS.labels(command, str(code)).inc()
    CNI_DURATION.labels(command).observe(seconds)


def observe_prepared_port(pool: str, outcome: str) -> None:
    PREPARED_PORTS.labels(pool, outcome).inc()
