"""The one lock layer: one call at a time per device ID, devices in parallel, and no entry
left behind (the vSwitch backends keep no per-device lock of their own)."""

from __future__ import annotations

import threading
import time

from cni.locks import DeviceLocks


def test_calls_for_one_device_take_turns_and_other_devices_do_not_wait():
    locks = DeviceLocks()
    inside: list[str] = []
    overlap: list[tuple[str, str]] = []
    guard = threading.Lock()

    def call(device: str) -> None:
        with locks.hold(device):
            with guard:
                overlap.extend((device, other) for other in inside)
                inside.append(device)
            time.sleep(0.02)
            with guard:
                inside.remove(device)

    threads = [threading.Thread(target=call, args=(d,)) for d in ["a"] * 6 + ["b"] * 6]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # Never two calls for one device at once; "a" and "b" did overlap.
    assert not [pair for pair in overlap if pair[0] == pair[1]]
    assert ("a", "b") in overlap or ("b", "a") in overlap
    assert len(locks) == 0


def test_a_failing_call_releases_its_device():
    locks = DeviceLocks()
    try:
        with locks.hold("a"):
            raise RuntimeError("plug failed")
    except RuntimeError:
        pass
    assert len(locks) == 0
    with locks.hold("a"):  # not left held
        assert len(locks) == 1
