"""The agent's init container script: installs the CNI shim for the HOST's python3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cni_shim import RELAY
from helpers.deploy import DEPLOY

SCRIPT = DEPLOY / "image" / "install-cni.sh"
# The oldest interpreter the shim is promised to run on (deploy/README.md), when this
# machine has it (pyenv builds on the development image).
MIN_PYTHON = Path("/root/.pyenv/versions/3.9.18/bin/python3.9")


def _host(tmp_path: Path, python: str | None = "/usr/bin/python3",
          multus: bool = True) -> Path:
    host = tmp_path / "host"
    (host / "opt/cni/bin").mkdir(parents=True)
    (host / "etc/cni/net.d").mkdir(parents=True)
    (host / "usr/bin").mkdir(parents=True)
    if python:
        target = host / python.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to("python3.11")  # relative, as distributions ship it
    if multus:
        (host / "etc/cni/net.d/00-multus.conf").write_text(
            json.dumps({"cniVersion": "1.0.0", "name": "multus-cni-network",
                        "type": "multus-shim"}))
    return host


def _install(host: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The script as the image runs it; the Python launcher unless ``NUMANET_CNI_RELAY``
    says otherwise (the relay is in the image, and in build/ only when it was built)."""
    return subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "HOST_ROOT": str(host),
                               "NUMANET_PYTHON": sys.executable, "NUMANET_CNI_RELAY": "none",
                               **env})


def _cni(plugin: Path, command: str, stdin: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(plugin)], input=stdin, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "CNI_COMMAND": command, **env})


def test_installs_a_plugin_that_runs_on_the_hosts_python(tmp_path: Path):
    host = _host(tmp_path)
    proc = _install(host)
    assert proc.returncode == 0, proc.stderr
    plugin = host / "opt/cni/bin/numanet"
    assert os.access(plugin, os.X_OK)
    assert plugin.read_text().splitlines()[0] == "#!/usr/bin/python3 -IS"
    assert "warning" not in proc.stderr
    # Run it as Multus would, with this machine's /usr/bin/python3 standing in for the host's.
    version = _cni(plugin, "VERSION", '{"cniVersion": "1.0.0"}')
    assert version.returncode == 0, version.stderr
    assert "1.1.0" in json.loads(version.stdout)["supportedVersions"]
    # Without an agent: CNI error 11 (try again later) naming the socket, not a traceback.
    socket = tmp_path / "nobody-home.sock"
    add = _cni(plugin, "ADD", json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "numanet"}),
               NUMANET_CNI_SOCKET=str(socket), CNI_CONTAINERID="c1", CNI_NETNS="/proc/1/ns/net",
               CNI_IFNAME="net1", CNI_PATH="/opt/cni/bin")
    error = json.loads(add.stdout)
    assert add.returncode != 0 and error["code"] == 11 and str(socket) in error["msg"] + \
        error.get("details", "")


@pytest.mark.skipif(not MIN_PYTHON.exists(), reason=f"{MIN_PYTHON} not on this machine")
def test_plugin_runs_on_the_oldest_promised_python(tmp_path: Path):
    host = _host(tmp_path)
    proc = _install(host, NUMANET_HOST_PYTHON=str(MIN_PYTHON))
    assert proc.returncode == 0, proc.stderr
    version = _cni(host / "opt/cni/bin/numanet", "VERSION", '{"cniVersion": "1.0.0"}')
    assert version.returncode == 0, version.stderr
    assert json.loads(version.stdout)["cniVersion"]


def test_rhel_platform_python_is_found(tmp_path: Path):
    host = _host(tmp_path, python="/usr/libexec/platform-python")
    assert _install(host).returncode == 0
    assert (host / "opt/cni/bin/numanet").read_text().startswith(
        "#!/usr/libexec/platform-python -IS\n")


def test_host_without_python_stops_with_what_to_do(tmp_path: Path):
    host = _host(tmp_path, python=None)
    proc = _install(host)
    assert proc.returncode == 1
    assert "the host has no python3" in proc.stderr and "NUMANET_HOST_PYTHON" in proc.stderr
    assert not (host / "opt/cni/bin/numanet").exists()


@pytest.mark.skipif(not RELAY.exists(), reason="the relay is not built (make relay)")
@pytest.mark.parametrize("python", ["/usr/bin/python3", None])
def test_installs_the_relay_when_the_image_has_it(tmp_path: Path, python: str | None):
    """The compiled relay becomes the plugin, with or without a python3 on the host; the
    Python shim stays beside it."""
    host = _host(tmp_path, python=python)
    proc = _install(host, NUMANET_CNI_RELAY=str(RELAY))
    assert proc.returncode == 0, proc.stderr
    assert "compiled relay" in proc.stdout
    plugin = host / "opt/cni/bin/numanet"
    assert plugin.read_bytes() == RELAY.read_bytes() and os.access(plugin, os.X_OK)
    assert (host / "opt/cni/bin/.numanet/numanet_shim.py").is_file()
    version = _cni(plugin, "VERSION", '{"cniVersion": "1.0.0"}')
    assert version.returncode == 0 and json.loads(version.stdout)["cniVersion"] == "1.0.0"
    socket = tmp_path / "nobody-home.sock"
    add = _cni(plugin, "ADD", "{}", NUMANET_CNI_SOCKET=str(socket))
    error = json.loads(add.stdout)
    assert add.returncode == 1 and error["code"] == 11 and str(socket) in error["msg"]


def test_missing_multus_is_warned_but_not_fatal(tmp_path: Path):
    host = _host(tmp_path, multus=False)
    proc = _install(host)
    assert proc.returncode == 0
    assert "no Multus configuration" in proc.stderr


def test_reinstall_replaces_the_plugin_atomically(tmp_path: Path):
    host = _host(tmp_path)
    plugin = host / "opt/cni/bin/numanet"
    plugin.write_text("#!/bin/sh\nexit 99\n")
    inode = plugin.stat().st_ino
    assert _install(host).returncode == 0
    assert plugin.stat().st_ino != inode  # renamed into place, never rewritten in place
    # The launcher and its private directory (the shim and its bytecode); no temp file left.
    assert sorted(p.name for p in plugin.parent.iterdir()) == [".numanet", "numanet"]
    assert sorted(str(p.relative_to(plugin.parent)) for p in plugin.parent.rglob("*")
                  if p.is_file()) == [".numanet/__pycache__/numanet_shim."
                                      f"{sys.implementation.cache_tag}.pyc",
                                      ".numanet/numanet_shim.py", "numanet"]
