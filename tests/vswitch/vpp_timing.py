"""Timings for the VPP backend's unit tests: restarts and retries take milliseconds."""

from __future__ import annotations

import time
from collections.abc import Callable

# Fast timings so restarts and retries take milliseconds in tests.
FAST = {"watch_interval": 0.05, "backoff": (0.02, 0.2), "read_timeout": 2.0, "ping_timeout": 1.0}


def wait_for(
    condition: Callable[[], object], timeout: float = 5.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
