"""Where VPP polls packets: its worker threads' CPUs (``show_threads``) mapped to NUMA nodes.

VPP with workers polls only on them; a VPP without workers polls on its main thread.
A thread that is not pinned reports no usable CPU and tells us nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_CPU_ID = 1 << 16  # same bound as numa.cpus; ~0 means "not pinned"


def polling_cpus(threads: Iterable[Any]) -> frozenset[int]:
    """CPU ids of the threads that poll, from show_threads' thread_data entries."""
    workers: set[int] = set()
    main: set[int] = set()
    for thread in threads:
        cpu = int(thread.cpu_id)
        if cpu >= MAX_CPU_ID:
            continue
        if str(thread.type) == "workers" or str(thread.name).startswith("vpp_wk"):
            workers.add(cpu)
        elif int(thread.id) == 0:
            main.add(cpu)
    return frozenset(workers or main)
