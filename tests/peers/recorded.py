"""Recorded calls of real CNI callers, replayed as they were sent.

A recording holds the environment and the exact stdin bytes a real caller gave the
``numanet`` executable, with the machine's paths replaced by the usual ones
(``/opt/cni/bin``, ``/var/lib/cni/networks``, ``/var/run/netns/...``). A replay maps
those paths back to the test's own, and changes nothing else: not the order of the
keys, not the repeated ``CNI_ARGS``, not the fields numanet does not use.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.cni_shim import CNI_BIN, CniCall, run_shim

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Recording:
    source: str  # what the recording says it is ("what")
    env: dict[str, str]
    stdin: bytes
    origin: str = ""  # the code it was written from ("source"), for calls written from code

    @property
    def config(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.stdin)
        return doc

    def replay(self, paths: dict[str, str], socket: Path) -> CniCall:
        """Run the installed shim with the recorded call, ``paths`` mapped (recorded ->
        test), and the agent's socket named as a node's config would name it."""
        env = {key: _mapped(value, paths) for key, value in self.env.items()}
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        env["NUMANET_CNI_SOCKET"] = str(socket)
        stdin = self.stdin
        for recorded, local in paths.items():
            stdin = stdin.replace(recorded.encode(), local.encode())
        return run_shim(env, stdin)

    def with_env(self, **changes: str) -> Recording:
        return Recording(self.source, {**self.env, **changes}, self.stdin, self.origin)

    def with_config(self, **changes: Any) -> Recording:
        """The same call with some config fields changed (keys stay in recorded order)."""
        doc = self.config
        doc.update(changes)
        return Recording(self.source, self.env, json.dumps(doc, separators=(",", ":")).encode(),
                         self.origin)


def _mapped(value: str, paths: dict[str, str]) -> str:
    for recorded, local in paths.items():
        value = value.replace(recorded, local)
    return value


def load(peer: str, name: str) -> Recording:
    """``tests/peers/<peer>/<name>.json``; the recorded bytes are checked against the
    recorded document, so a hand edit of one without the other fails here."""
    doc = json.loads((HERE / peer / f"{name}.json").read_text())
    stdin = doc["stdin_bytes"].encode()
    assert json.loads(stdin) == doc["stdin"], f"{peer}/{name}: stdin and stdin_bytes differ"
    return Recording(doc["what"], dict(doc["env"]), stdin, doc.get("source", ""))


def document(peer: str, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((HERE / peer / f"{name}.json").read_text())
    return doc


# The usual paths a recording names, and where a test's node keeps them.
RECORDED_BIN = "/opt/cni/bin"
RECORDED_IPAM = "/var/lib/cni/networks"
RECORDED_CNI_DEVINFO = "/var/run/k8s.cni.cncf.io/devinfo/cni"


def node_paths(node: Any, netns: dict[str, str]) -> dict[str, str]:
    """Recorded path -> the test's: ``netns`` (recorded namespace path -> a real one), the
    plugin directory, host-local's data directory and Multus' CNI device-info directory of
    ``node`` (a helpers.ovs_node.OvsNode)."""
    return {**netns, RECORDED_BIN: CNI_BIN, RECORDED_IPAM: str(node.ipam_dir),
            RECORDED_CNI_DEVINFO: str(node.cni_devinfo_dir)}


def mapped(value: Any, paths: dict[str, str]) -> Any:
    """A recorded JSON value with ``paths`` mapped in every string (recorded -> test)."""
    return json.loads(_mapped(json.dumps(value), paths))


def cni_args(call: Recording) -> list[tuple[str, str]]:
    """CNI_ARGS as (key, value) pairs in the order the caller wrote them."""
    return [tuple(pair.split("=", 1)) for pair in call.env["CNI_ARGS"].split(";")
            if pair]  # type: ignore[misc]
