"""Real network namespaces for tests, like containernetworking's testutils.NewNS.

``with netns() as ns:`` runs ``ip netns add`` with a name no other test or process
uses, yields it (``ns.path`` is ``/var/run/netns/<name>``, what a runtime passes as
CNI_NETNS), and always deletes it, even when the test fails.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/var/run/netns")
_counter = itertools.count()


@dataclass(frozen=True)
class NetNS:
    name: str

    @property
    def path(self) -> str:
        return str(NETNS_DIR / self.name)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def run(self, *cmd: str) -> str:
        """Run a command inside the namespace (``ip netns exec``); returns its stdout."""
        done = subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True,
                              text=True, check=True, timeout=30)
        return done.stdout


def unique_name(prefix: str = "nntest") -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}-{secrets.token_hex(2)}"


def create(prefix: str = "nntest") -> NetNS:
    ns = NetNS(unique_name(prefix))
    subprocess.run(["ip", "netns", "add", ns.name], check=True, capture_output=True, timeout=30)
    return ns


def delete(ns: NetNS) -> None:
    if ns.exists():
        subprocess.run(["ip", "netns", "delete", ns.name], check=False, capture_output=True,
                       timeout=30)


@contextmanager
def netns(prefix: str = "nntest") -> Iterator[NetNS]:
    ns = create(prefix)
    try:
        yield ns
    finally:
        delete(ns)
