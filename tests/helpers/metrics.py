"""Reading numanet's metrics back as Prometheus would: from the process's registry."""

from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """The value of one series, 0 when it has no sample yet (as a counter starts)."""
    value = REGISTRY.get_sample_value(name, {k: str(v) for k, v in labels.items()})
    return 0.0 if value is None else value
