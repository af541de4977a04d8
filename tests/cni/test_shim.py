"""The shim on its own: stdlib only, VERSION without the agent, agents that misbehave,
and the install (``python -m cni.install``: a launcher and the shim's precompiled
bytecode, or the compiled relay) working end to end, with the source as the fallback when
the bytecode is not for the interpreter or not for the source.

The tests that exec a plugin run both the Python shim and the relay (``cni/relay.c``):
they must answer alike."""

from __future__ import annotations

import importlib.util
import json
import os
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers.cni_shim import PLUGINS, RELAY, plugin_params

from cni import errors, netconf, shim
from cni.install import MODULE, install, private_dir

FORBIDDEN = ("grpc", "google", "ovsdbapp", "yaml", "deviceplugin", "vswitch", "protos", "json",
             "socket", "re", "os", "enum")


@pytest.fixture(params=plugin_params())
def plugin(request: pytest.FixtureRequest) -> Path:
    """The CNI executable under test: the Python shim or the compiled relay."""
    return PLUGINS[request.param]


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


def test_version_is_answered_without_the_agent(tmp_path, plugin):
    env = {"CNI_COMMAND": "VERSION", "NUMANET_CNI_SOCKET": str(tmp_path / "nothing.sock")}
    rc, out = run([str(plugin)], env, b'{"cniVersion": "0.4.0"}')
    assert rc == 0
    doc = json.loads(out)
    assert doc == {"cniVersion": "0.4.0", "supportedVersions": list(netconf.SUPPORTED_VERSIONS)}
    rc, out = run([str(plugin)], env, b"")
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
def test_an_agent_that_answers_badly_is_try_again_later(tmp_path, reply, read_first, words,
                                                       plugin):
    path = tmp_path / "agent.sock"
    hold = threading.Event()
    thread = _fake_agent(path, reply, hold, read_first)
    env = {"CNI_COMMAND": "ADD", "NUMANET_CNI_SOCKET": str(path), "NUMANET_CNI_TIMEOUT": "0.5"}
    rc, out = run([str(plugin)], env, b'{"cniVersion": "1.0.0"}')
    hold.set()
    thread.join(5)
    doc = json.loads(out)
    assert rc == 1
    assert doc["code"] == errors.TRY_AGAIN_LATER and doc["cniVersion"] == "1.0.0"
    assert words in doc["msg"] and str(path) in doc["msg"]


def test_agent_exit_code_and_stdout_are_relayed(tmp_path, plugin):
    path = tmp_path / "agent.sock"
    thread = _fake_agent(path, b'1\n{"code": 7, "msg": "x"}', threading.Event())
    rc, out = run([str(plugin)], {"CNI_COMMAND": "ADD", "NUMANET_CNI_SOCKET": str(path)}, b"{}")
    thread.join(5)
    assert rc == 1 and out == '{"code": 7, "msg": "x"}'


def test_an_answer_sent_before_the_request_was_read_is_relayed(tmp_path, plugin):
    """The agent answers early (too large, too many calls) and closes without reading the
    request: Linux then fails the shim's read after the answer (ECONNRESET); the answer is
    whole, and relayed."""
    path = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer_unread() -> None:
        conn, _ = server.accept()
        with conn:
            select.select([conn], [], [], 10)  # the request is there, and stays unread
            conn.sendall(b'1\n{"code": 11, "msg": "busy"}')
        server.close()

    thread = threading.Thread(target=answer_unread, daemon=True)
    thread.start()
    rc, out = run([str(plugin)], {"CNI_COMMAND": "ADD", "NUMANET_CNI_SOCKET": str(path)}, b"{}")
    thread.join(5)
    assert rc == 1 and out == '{"code": 11, "msg": "busy"}'


def test_installed_plugin_round_trip(cni_bed, pod_netns, tmp_path):
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


@pytest.mark.skipif(not RELAY.exists(), reason="the relay is not built (make relay)")
def test_installed_relay_round_trip(cni_bed, pod_netns, tmp_path):
    """The compiled relay installed as the plugin, the shim and its bytecode kept beside it
    (the fallback), through the real agent."""
    plugin = install(tmp_path / "bin" / "numanet", relay=RELAY)
    assert plugin.read_bytes() == RELAY.read_bytes()
    assert plugin.stat().st_mode & 0o777 == 0o755
    lib = private_dir(plugin)
    assert sorted(p.name for p in lib.iterdir()) == ["__pycache__", f"{MODULE}.py"]
    dev = cni_bed.slots.device_id("vhostuser-ovs", 31)
    cni_bed.allocate("default", "pod-a", dev)
    env = cni_bed.env("ADD", "relay1", netns_path=pod_netns.path)
    rc, out = run([str(plugin)], env, json.dumps(cni_bed.netconf(dev)).encode())
    assert rc == 0, out
    assert json.loads(out)["interfaces"][0]["socketPath"].endswith(f"{dev}/sock")
    env["CNI_COMMAND"] = "DEL"
    rc, out = run([str(plugin)], env, json.dumps(cni_bed.netconf(dev)).encode())
    assert rc == 0 and out == "", out
    cni_bed.assert_clean()


def test_install_picks_the_relay_only_when_asked_or_found(tmp_path, monkeypatch):
    from cni import install as installer

    monkeypatch.setenv(installer.RELAY_ENV, "none")
    assert installer.find_relay() is None
    assert installer.find_relay("none") is None
    with pytest.raises(ValueError, match="not an executable file"):
        installer.find_relay(str(tmp_path / "missing"))
    fake = tmp_path / "relay"
    fake.write_bytes(b"\x7fELF")
    fake.chmod(0o755)
    assert installer.find_relay(str(fake)) == fake
    monkeypatch.setattr(installer, "relay_candidates", lambda: [tmp_path / "absent", fake])
    assert installer.find_relay("auto") == fake
    monkeypatch.setattr(installer, "relay_candidates", lambda: [tmp_path / "absent"])
    assert installer.find_relay("auto") is None  # no binary: the Python launcher


def _installed(tmp_path: Path) -> tuple[Path, Path, Path]:
    plugin = install(tmp_path / "bin" / "numanet")
    source = private_dir(plugin) / f"{MODULE}.py"
    return plugin, source, Path(importlib.util.cache_from_source(str(source)))


def _version_import_trace(plugin: Path) -> tuple[str, str]:
    """VERSION through the plugin under ``-v``: (stdout, the import system's trace)."""
    done = subprocess.run([sys.executable, "-IS", "-v", str(plugin)], input=b"{}",
                          env={"PATH": "/usr/bin:/bin", "CNI_COMMAND": "VERSION"},
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode(), done.stderr.decode()


def test_install_lays_out_launcher_shim_and_bytecode(tmp_path):
    plugin, source, cached = _installed(tmp_path)
    lib = private_dir(plugin)
    assert lib == tmp_path / "bin" / ".numanet"
    assert source.read_text() == Path(shim.__file__).read_text()
    assert cached.read_bytes()[:4] == importlib.util.MAGIC_NUMBER
    for directory in (lib, cached.parent):  # root runs what they hold
        assert directory.stat().st_mode & 0o777 == 0o755
    for path in (source, cached):
        assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in lib.iterdir()) == ["__pycache__", f"{MODULE}.py"]
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]


def test_installed_plugin_runs_the_precompiled_shim(tmp_path):
    plugin, source, cached = _installed(tmp_path)
    before = cached.stat()
    out, trace = _version_import_trace(plugin)
    assert json.loads(out)["supportedVersions"] == list(netconf.SUPPORTED_VERSIONS)
    assert f"code object from '{cached}'" in trace  # not compiled from the source
    after = cached.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_bytecode_of_another_interpreter_falls_back_to_the_source(tmp_path):
    """A host python whose magic number differs from the installer's compiles the source,
    and caches its own bytecode for the next call."""
    plugin, _, cached = _installed(tmp_path)
    foreign = bytearray(cached.read_bytes())
    foreign[:2] = (int.from_bytes(foreign[:2], "little") ^ 0x5A5A).to_bytes(2, "little")
    cached.write_bytes(bytes(foreign))
    out, trace = _version_import_trace(plugin)
    assert json.loads(out)["cniVersion"] == "1.1.0"
    assert "bad magic number" in trace
    assert cached.read_bytes()[:4] == importlib.util.MAGIC_NUMBER
    out, trace = _version_import_trace(plugin)
    assert f"code object from '{cached}'" in trace


def test_bytecode_of_another_source_is_not_run(tmp_path):
    """The bytecode is hash-checked against the source beside it: a source replaced under
    it (a reinstall in progress, a hand edit) is what runs."""
    plugin, source, cached = _installed(tmp_path)
    stat = source.stat()
    text = source.read_text()
    edited = text.replace('SPEC_VERSION = "1.1.0"', 'SPEC_VERSION = "9.9.9"')
    assert edited != text and len(edited) == len(text)
    source.write_text(edited)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    out, _ = _version_import_trace(plugin)
    assert json.loads(out)["cniVersion"] == "9.9.9"


def test_reinstall_replaces_the_bytecode_of_every_interpreter(tmp_path):
    plugin, source, cached = _installed(tmp_path)
    other = cached.with_name(f"{MODULE}.cpython-39.pyc")  # the host's own, from an old source
    other.write_bytes(b"stale")
    os.chmod(private_dir(plugin), 0o777)
    old_umask = os.umask(0)
    try:
        assert install(plugin) == plugin
    finally:
        os.umask(old_umask)
    assert not other.exists()
    assert private_dir(plugin).stat().st_mode & 0o777 == 0o755
    assert cached.read_bytes()[:4] == importlib.util.MAGIC_NUMBER
    rc, out = run([str(plugin)], {"CNI_COMMAND": "VERSION"}, b"{}")
    assert rc == 0 and json.loads(out)["cniVersion"] == "1.1.0"


def test_install_refuses_an_interpreter_the_hash_bang_line_cannot_hold(tmp_path):
    for python in ("python3", "/opt/my python/bin/python3"):
        with pytest.raises(ValueError, match="absolute path without spaces"):
            install(tmp_path / "bin" / "numanet", python)
    assert not (tmp_path / "bin").exists()
