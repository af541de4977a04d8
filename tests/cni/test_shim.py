"""The shim on its own: stdlib only, VERSION without the agent, agents that misbehave,
and the single-file install (``python -m cni.install``) working end to end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers.cni_shim import SHIM

from cni import errors, netconf, shim
from cni.install import install

FORBIDDEN = ("grpc", "google", "ovsdbapp", "yaml", "deviceplugin", "vswitch", "protos", "json",
             "socket", "re", "os", "enum")


def run(executable: list[str], env: dict[str, str], stdin: bytes = b"") -> tuple[int, str]:
    done = subprocess.run(executable, input=stdin, env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, timeout=30)
    assert b"Traceback" not in done.stdout + done.stderr
    return done.returncode, done.stdout.decode()


def test_versions_match_the_agent():
    assert shim.SUPPORTED_VERSIONS == netconf.SUPPORTED_VERSIONS
    assert shim.SPEC_VERSION == netconf.SPEC_VERSION
    assert shim._TRY_AGAIN_LATER == errors.TRY_AGAIN_LATER


def test_shim_imports_only_the_standard_library_on_the_way_through(tmp_path):
    """Importing the shim and relaying a call loads nothing heavy (not even json)."""
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import cni.shim as s\n"
        "s.run({b'CNI_COMMAND': b'ADD', b'NUMANET_CNI_SOCKET': sys.argv[1].encode()}, b'{}')\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tmp_path / "agent.sock"
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            while conn.recv(65536):
                pass
            conn.sendall(b"0\n{}")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                          text=True, timeout=30, check=True)
    thread.join(5)
    server.close()
    loaded = set(done.stdout.split())
    assert "cni.shim" in loaded
    heavy = {m for m in loaded if m.split(".")[0] in FORBIDDEN}
    assert not heavy, f"the shim pulled in {sorted(heavy)}"


def test_version_is_answered_without_the_agent(tmp_path):
    env = {"CNI_COMMAND": "VERSION", "NUMANET_CNI_SOCKET": str(tmp_path / "nothing.sock")}
    rc, out = run([str(SHIM)], env, b'{"cniVersion": "0.4.0"}')
    assert rc == 0
    doc = json.loads(out)
    assert doc == {"cniVersion": "0.4.0", "supportedVersions": list(netconf.SUPPORTED_VERSIONS)}
    rc, out = run([str(SHIM)], env, b"")
    assert rc == 0 and json.loads(out)["cniVersion"] == "1.1.0"


def _fake_agent(path: Path, reply: bytes | None, hold: threading.Event,
                read_first: bool = True) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while read_first and conn.recv(65536):
                pass
            if reply is None:
                hold.wait(10)  # never answers
            else:
                conn.sendall(reply)
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("reply, read_first, words", [
    (b"", True, "without a complete answer"),
    (b"garbage", True, "without a complete answer"),
    (b"", False, "answered badly"),  # reset or EOF, depending on timing
    (None, True, "did not answer within"),
])
def test_an_agent_that_answers_badly_is_try_again_later(tmp_path, reply, read_first, words):
    path = tmp_path / "agent.sock"
    hold = threading.Event()
    thread = _fake_agent(path, reply, hold, read_first)
    env = {"CNI_COMMAND": "ADD", "NUMANET_CNI_SOCKET": str(path), "NUMANET_CNI_TIMEOUT": "0.5"}
    rc, out = run([str(SHIM)], env, b'{"cniVersion": "1.0.0"}')
    hold.set()
    thread.join(5)
    doc = json.loads(out)
    assert rc == 1
    assert doc["code"] == errors.TRY_AGAIN_LATER and doc["cniVersion"] == "1.0.0"
    assert words in doc["msg"] and str(path) in doc["msg"]


def test_agent_exit_code_and_stdout_are_relayed(tmp_path):
    path = tmp_path / "agent.sock"
    thread = _fake_agent(path, b'1\n{"code": 7, "msg": "x"}', threading.Event())
    rc, out = run([str(SHIM)], {"CNI_COMMAND": "ADD", "NUMANET_CNI_SOCKET": str(path)}, b"{}")
    thread.join(5)
    assert rc == 1 and out == '{"code": 7, "msg": "x"}'


def test_installed_single_file_plugin_round_trip(cni_bed, pod_netns, tmp_path):
    """``python -m cni.install`` output, run with -IS as /opt/cni/bin/numanet would be."""
    plugin = install(tmp_path / "bin" / "numanet")
    assert plugin.read_text().splitlines()[0] == f"#!{sys.executable} -IS"
    assert plugin.stat().st_mode & 0o777 == 0o755
    dev = cni_bed.slots.device_id("vhostuser-ovs", 30)
    cni_bed.allocate("default", "pod-a", dev)
    env = cni_bed.env("ADD", "inst1", netns_path=pod_netns.path)
    rc, out = run([str(plugin)], env, json.dumps(cni_bed.netconf(dev)).encode())
    assert rc == 0, out
    assert json.loads(out)["interfaces"][0]["socketPath"].endswith(f"{dev}/sock")
    env["CNI_COMMAND"] = "DEL"
    rc, out = run([str(plugin)], env, json.dumps(cni_bed.netconf(dev)).encode())
    assert rc == 0, out
    cni_bed.assert_clean()
