"""Calling the real ``numanet-cni`` executable as a container runtime does, and reading
what it answers and what host-local IPAM holds afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SHIM = Path(sys.executable).with_name("numanet-cni")
# The compiled relay (cni/relay.c), built by `make relay`; the tests that run both skip
# it when it was not built (no C compiler).
RELAY = Path(__file__).resolve().parents[2] / "build" / "numanet-relay"
CNI_BIN = "/usr/lib/cni"
# What run_shim executes: the Python shim, or the relay where a test asks for it
# (``use_plugin``).
PLUGINS = {"shim": SHIM, "relay": RELAY}
_current = {"plugin": SHIM}


def plugin_params() -> list[Any]:
    """pytest params "shim" and "relay" (skipped when the relay is not built)."""
    return ["shim", pytest.param("relay", marks=pytest.mark.skipif(
        not RELAY.exists(), reason=f"{RELAY} not built (make relay)"))]


def use_plugin(name: str) -> Path:
    """Make run_shim execute the plugin ``name`` ("shim" or "relay"); returns its path."""
    _current["plugin"] = PLUGINS[name]
    return PLUGINS[name]


@dataclass
class CniCall:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None


def run_shim(env: dict[str, str], stdin: bytes | dict[str, Any]) -> CniCall:
    """One call of the shim with exactly ``env`` and the config on stdin."""
    data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    done = subprocess.run([str(_current["plugin"])], input=data, env=env, capture_output=True,
                          timeout=60)
    return CniCall(done.returncode, done.stdout.decode(), done.stderr.decode())


def assert_cni_error(call: CniCall, code: int, *words: str) -> dict[str, Any]:
    """A CNI error in the spec's shape, with ``code`` and every word in msg or details."""
    assert call.rc == 1, call.stdout
    assert "Traceback" not in call.stdout + call.stderr
    doc: dict[str, Any] = json.loads(call.stdout)
    assert set(doc) <= {"cniVersion", "code", "msg", "details"}
    assert doc["code"] == code, doc
    assert doc["msg"] and doc["cniVersion"]
    text = doc["msg"] + " " + doc.get("details", "")
    for word in words:
        assert word in text, doc
    return doc


def require_host_local() -> None:
    if not os.access(f"{CNI_BIN}/host-local", os.X_OK):
        pytest.skip("host-local IPAM is missing: apt-get install -y containernetworking-plugins")


def leases(ipam_dir: Path, network: str) -> list[str]:
    """host-local's reservations of a network (files named after the IPs)."""
    directory = ipam_dir / network
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir()
                  if p.name != "lock" and not p.name.startswith("last_reserved_ip"))
