"""Network namespaces: one named namespace per pod (as a container runtime makes), and an
anonymous one for the demo's OVS.

OVS-DPDK's netdev datapath creates kernel tap devices (``ovs-netdev`` and one per
bridge); two instances in one namespace fight over those names. Starting the demo's
daemons in a namespace of their own keeps them off the host's interfaces and away from
any other OVS, and the namespace disappears with the daemons, even after a ``kill -9``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


class NetnsError(RuntimeError):
    pass


def path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def add(name: str) -> Path:
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise NetnsError(f"ip netns add {name} failed: {done.stderr.strip()}")
    return path(name)


def delete(name: str) -> bool:
    """Delete a named namespace; True when it existed."""
    if not exists(name):
        return False
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    if exists(name):  # a stale mount point without a namespace behind it
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", str(path(name))], capture_output=True, check=False)
            path(name).unlink()
    return True


def remove_dir_if_empty() -> bool:
    """Undo what the first ``ip netns add`` on a machine does (it creates /run/netns and
    bind-mounts it onto itself); only when no namespace is left in it. True if removed."""
    try:
        if any(NETNS_DIR.iterdir()):
            return False
    except FileNotFoundError:
        return False
    subprocess.run(["umount", str(NETNS_DIR)], capture_output=True, check=False)
    with contextlib.suppress(OSError):
        NETNS_DIR.rmdir()
    return not NETNS_DIR.exists()


def pids(name: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                          check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


@contextlib.contextmanager
def private_network() -> Iterator[None]:
    """Run the body (and the processes it starts) in a new, anonymous network namespace.

    Only the calling thread moves, and it moves back afterwards; start no threads in the
    body, they would stay in the new namespace.
    """
    if threading.current_thread() is not threading.main_thread():
        raise NetnsError("private_network() must be used from the main thread")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"cannot create a network namespace: {os.strerror(err)}")
        try:
            yield
        finally:
            if libc.setns(home, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise NetnsError(f"cannot return to the host network namespace: "
                                 f"{os.strerror(err)}")
    finally:
        os.close(home)
