"""Hostile input and faults (issue #13), each against the real agent's CNI service and,
where a runtime would see it, through the real shim: whatever comes in, the caller gets a
CNI error JSON with a spec code, nothing is left that blocks a later call, and nothing is
written outside the agent's directories. tests/cni/test_fuzz.py searches for more."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.cni_shim import SHIM, CniCall, assert_cni_error
from helpers.netns import netns
from helpers.ovs import eventually, started_private_ovs
from helpers.ovs_node import ok, running_node

from cni import errors, netconf, shim
from cni.records import AttachmentRecord

pytestmark = pytest.mark.ovs


def run_bytes_env(env: dict[str, str | bytes], stdin: bytes) -> CniCall:
    """The shim exec'd with an environment that may hold bytes that are not UTF-8."""
    raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in env.items()}
    done = subprocess.run([str(SHIM)], input=stdin, env=raw, capture_output=True, timeout=60)
    return CniCall(done.returncode, done.stdout.decode(errors="replace"),
                   done.stderr.decode(errors="replace"))


def raw_call(path: Path, request: bytes, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    """One call on the agent's socket as an old shim makes it: send everything, half-close,
    then read the answer (no reading before the request is out)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\n")
    return int(head), json.loads(body)


def frame(env: dict[str, str], stdin: bytes) -> bytes:
    return shim.encode_call({k.encode(): v.encode() for k, v in env.items()}, stdin)


def devinfo_conf(bed, dev: str, name: str) -> dict[str, Any]:
    return bed.netconf(dev, runtimeConfig={
        "CNIDeviceInfoFile": str(bed.devinfo_root / "cni" / name)})


# -- 1. a file name over 255 bytes wedged the device ---------------------------------------


def test_an_overlong_devinfo_name_is_refused_before_anything_is_recorded(cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 20)
    cni_bed.allocate("default", "pod-a", dev)
    call = cni_bed.cni("ADD", devinfo_conf(cni_bed, dev, "x" * 300 + ".json"), "c1",
                       netns_path=pod_netns.path)
    assert_cni_error(call, errors.INVALID_NETWORK_CONFIG, "runtimeConfig.CNIDeviceInfoFile",
                     "255 bytes")
    cni_bed.assert_clean()
    # The device is as good as new for the next call.
    conf = devinfo_conf(cni_bed, dev, "ok.json")
    assert cni_bed.cni("ADD", conf, "c2", netns_path=pod_netns.path).rc == 0
    assert cni_bed.cni("DEL", conf, "c2").rc == 0
    cni_bed.assert_clean()


def test_a_recorded_path_that_cannot_name_a_file_does_not_block_the_device(cni_bed, pod_netns):
    """Records an older agent wrote with device-info paths that cannot name a file (too
    long, under a file, a directory): DEL of that attachment and a take-over by the next
    ADD both count the file as gone."""
    dev = cni_bed.slots.device_id("vhostuser-ovs", 21)
    cni_bed.allocate("default", "pod-a", dev)
    cni_dir = cni_bed.devinfo_root / "cni"
    (cni_dir / "a-file").write_text("not a directory")
    (cni_dir / "a-dir.json").mkdir()
    conf = devinfo_conf(cni_bed, dev, "ok.json")
    for bad in (cni_dir / ("x" * 300 + ".json"), cni_dir / "a-file" / "x.json",
                cni_dir / "a-dir.json"):
        old = AttachmentRecord(device_id=dev, network=cni_bed.network, container_id="c-old",
                               ifname="net1", pod_namespace="default", pod_name="pod-a",
                               state="added", device_info_file=str(bad))
        cni_bed.context.records.put(old)
        assert cni_bed.cni("DEL", conf, "c-old").rc == 0, bad
        assert cni_bed.records() == []
        cni_bed.context.records.put(old)  # DEL never came: the next pod's ADD takes over
        add = cni_bed.cni("ADD", conf, "c-new", netns_path=pod_netns.path)
        assert add.rc == 0, (bad, add.stdout)
        assert cni_bed.cni("DEL", conf, "c-new").rc == 0
    (cni_dir / "a-file").unlink()
    (cni_dir / "a-dir.json").rmdir()
    cni_bed.assert_clean()


# -- 2. deep JSON: tracebacks and a call thread killed -------------------------------------


def test_deeply_nested_json_is_a_decode_failure_for_every_command(cni_bed, pod_netns, tmp_path):
    deep = b"[" * 5000 + b"\n"
    for command in ("ADD", "DEL", "CHECK", "STATUS", "GC"):
        call = cni_bed.cni(command, deep, "c1", netns_path=pod_netns.path)
        assert_cni_error(call, errors.DECODE_FAILURE, "nested")
    # VERSION answers whatever the config is, as the reference plugins' skel does.
    version = cni_bed.cni("VERSION", deep)
    assert version.rc == 0 and "Traceback" not in version.stderr
    assert "1.1.0" in version.json["supportedVersions"]
    # Nested too deeply for numanet, though not for the JSON parser.
    args = {"cni": {}}
    for _ in range(100):
        args = {"a": args}
    call = cni_bed.cni("ADD", cni_bed.netconf("vhostuser-ovs-n0-022", args=args), "c1",
                       netns_path=pod_netns.path)
    assert_cni_error(call, errors.DECODE_FAILURE, "deeper than 64")
    # The agent's socket, as any client reaches it: an answer, not a dead thread.
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "net1",
           "CNI_NETNS": pod_netns.path, "CNI_PATH": "/usr/lib/cni"}
    code, doc = raw_call(cni_bed.socket, frame(env, deep))
    assert code == 1 and doc["code"] == errors.DECODE_FAILURE, doc
    # The agent is down: the shim still answers JSON.
    call = cni_bed.cni("ADD", deep, "c1", netns_path=pod_netns.path,
                       NUMANET_CNI_SOCKET=str(tmp_path / "none.sock"))
    assert_cni_error(call, errors.TRY_AGAIN_LATER, "not reachable")
    cni_bed.assert_clean()


# -- 3. bytes that are not UTF-8 in the environment ---------------------------------------


def test_environment_bytes_that_are_not_utf8_are_an_invalid_environment(cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 23)
    cni_bed.allocate("default", "pod-a", dev)
    stdin = json.dumps(cni_bed.netconf(dev)).encode()
    for name, value in (("CNI_IFNAME", b"net\xff"), ("CNI_CONTAINERID", b"c1\xfe"),
                        ("CNI_NETNS", pod_netns.path.encode() + b"\xff"),
                        ("CNI_ARGS", b"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;"
                                     b"K8S_POD_NAME=pod-\xe9"),
                        ("CNI_PATH", b"/usr/lib/cni:/opt/\xff")):
        env: dict[str, str | bytes] = dict(cni_bed.env("ADD", "c1", netns_path=pod_netns.path))
        env[name] = value
        assert_cni_error(run_bytes_env(env, stdin), errors.INVALID_ENVIRONMENT, name, "UTF-8")
    cni_bed.assert_clean()


# -- 4. a config too large to ever succeed -------------------------------------------------


def test_shim_and_agent_agree_on_the_largest_config():
    assert shim.MAX_STDIN_BYTES == netconf.MAX_CONFIG_BYTES


def test_an_oversize_config_is_a_decode_failure_not_try_again(cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 24)
    for size in (1_500_000, 2_100_000, 10_000_000):
        conf = cni_bed.netconf(dev, padding="x" * size)
        call = cni_bed.cni("ADD", conf, "c1", netns_path=pod_netns.path)
        assert_cni_error(call, errors.DECODE_FAILURE, "bytes")
    # An old shim sends the whole request before it reads anything: the agent reads it to
    # its end (throwing it away) so that the answer still reaches it.
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "net1",
           "CNI_NETNS": pod_netns.path, "CNI_PATH": "/usr/lib/cni"}
    code, doc = raw_call(cni_bed.socket, frame(env, b"{" + b" " * 10_000_000 + b"}"))
    assert code == 1 and doc["code"] == errors.DECODE_FAILURE, doc
    cni_bed.assert_clean()


# -- 5. slow clients and connection floods -------------------------------------------------


def test_a_client_trickling_its_request_is_cut_off_at_the_call_deadline(cni_bed):
    cni_bed.service.read_deadline = 1.0
    request = frame({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.1.0"}')
    started = time.monotonic()
    answer = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(cni_bed.socket))
        for byte in request:  # one byte every 0.2 s: each read is quick, the whole is not
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            if select.select([sock], [], [], 0.2)[0]:
                answer = sock.recv(65536)
                break
            assert time.monotonic() - started < 4, "the agent still waits for the request"
    assert time.monotonic() - started < 3
    head, _, body = answer.partition(b"\n")
    assert head == b"1" and json.loads(body)["code"] == errors.TRY_AGAIN_LATER, answer
    assert b"within 1 s" in body


def test_connections_past_the_bound_are_answered_try_again_later(cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 25)
    cni_bed.allocate("default", "pod-a", dev)
    conf = cni_bed.netconf(dev)
    service = cni_bed.service
    service.max_connections = 3
    idle = []
    try:
        for _ in range(3):  # clients that connect and send nothing more
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(cni_bed.socket))
            sock.sendall(shim.MAGIC)
            idle.append(sock)
        eventually(lambda: len(service._active) == 3)
        threads = threading.active_count()
        call = cni_bed.cni("ADD", conf, "c1", netns_path=pod_netns.path)
        assert_cni_error(call, errors.TRY_AGAIN_LATER, "serving 3 CNI calls")
        for _ in range(50):  # a flood: answered on the spot, no thread each
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(cni_bed.socket))
                head, _, body = sock.recv(65536).partition(b"\n")
                assert head == b"1" and json.loads(body)["code"] == errors.TRY_AGAIN_LATER
        assert threading.active_count() <= threads + 2
    finally:
        for sock in idle:
            sock.close()
    eventually(lambda: not service._active)
    assert cni_bed.cni("ADD", conf, "c1", netns_path=pod_netns.path).rc == 0
    assert cni_bed.cni("DEL", conf, "c1").rc == 0
    cni_bed.assert_clean()


# -- 6. ipam.dataDir -----------------------------------------------------------------------


def test_ipam_data_dir_must_be_absolute_and_normalised(cni_bed, pod_netns, tmp_path, monkeypatch):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 26)
    cni_bed.allocate("default", "pod-a", dev)
    # The agent's working directory: a relative dataDir would land here or above it.
    trap = tmp_path / "trap"
    cwd = trap / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    ipam_dir = str(cni_bed.ipam_dir)
    for data_dir, words in (("ipam-here", "not an absolute path"),
                            ("../../etc/passwd", "not an absolute path"),
                            ("./x", "not an absolute path"),
                            (f"{ipam_dir}/../../escape", "'..'"),
                            (f"{ipam_dir}/./x", "not normalised"),
                            (f"{ipam_dir}//x", "not normalised"),
                            (f"{ipam_dir}/x\u0000y", "NUL"),
                            (f"{ipam_dir}/{'d' * 300}", "255 bytes"),
                            (f"{ipam_dir}/\ud800", "UTF-8"),
                            (7, "must be a string")):
        ipam = {"type": "host-local", "dataDir": data_dir,
                "ranges": [[{"subnet": "10.77.0.0/24"}]]}
        call = cni_bed.cni("ADD", cni_bed.netconf(dev, ipam=ipam), "c1",
                           netns_path=pod_netns.path)
        assert_cni_error(call, errors.INVALID_NETWORK_CONFIG, "ipam.dataDir", words)
    assert sorted(p.relative_to(trap).as_posix() for p in trap.rglob("*")) == ["a", "a/b"]
    assert not (tmp_path / "escape").exists()
    cni_bed.assert_clean()
    # A trailing '/' is fine, and so is an empty dataDir (host-local's default place).
    conf = cni_bed.netconf(dev, ipam={**cni_bed.netconf()["ipam"], "dataDir": ipam_dir + "/"})
    assert cni_bed.cni("ADD", conf, "c1", netns_path=pod_netns.path).rc == 0
    assert cni_bed.cni("DEL", conf, "c1").rc == 0
    cni_bed.assert_clean()


# -- 8. an ADD on a vSwitch known dead -----------------------------------------------------


def test_an_add_while_ovs_vswitchd_is_known_dead_fails_at_once():
    with started_private_ovs() as ovs, running_node(ovs, prepare=False) as node, \
            netns("nnhi") as ns:
        node.admit("pod-a")
        conf = node.netconf("pod-a")
        monitor = node.agent.vswitch_monitor
        ovs.stop_vswitchd()
        eventually(lambda: not monitor.states()["ovs"].healthy, timeout=15)
        started = time.monotonic()
        call = node.cni("ADD", conf, "pod-a", ns.path)
        took = time.monotonic() - started
        assert_cni_error(call, errors.TRY_AGAIN_LATER, "vSwitch ovs is down", "pod=default/pod-a",
                         "ovs-vswitchd")
        assert took < 2.0, f"the ADD took {took:.1f} s"  # the plug's apply timeout is 5 s
        assert node.records() == [] and node.leases() == []
        ovs.start_vswitchd()
        eventually(lambda: monitor.states()["ovs"].healthy, timeout=15)
        ok(node.cni("ADD", conf, "pod-a", ns.path))
        ok(node.cni("DEL", conf, "pod-a"))
    assert not os.path.exists(node.root)


def test_calls_right_at_ovs_vswitchd_s_death_answer_without_waiting_for_it():
    """ovs-vswitchd killed: an ADD made before anything could know is refused 11 (the plug
    sees the death instead of waiting out its apply timeout) and leaves nothing; a DEL
    succeeds, since the port is gone from the database a restarted vswitchd reads and the
    dead one holds no socket; after the restart the port does not come back, and the DEL
    is still idempotent."""
    import signal

    with started_private_ovs() as ovs, running_node(ovs, prepare=False) as node, \
            netns("nnhi") as ns:
        monitor = node.agent.vswitch_monitor
        node.admit("pod-a")
        node.admit("pod-b")
        conf_a, conf_b = node.netconf("pod-a"), node.netconf("pod-b")
        ok(node.cni("ADD", conf_a, "pod-a", ns.path))
        pid = ovs.vswitchd_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        call = node.cni("ADD", conf_b, "pod-b", ns.path)
        assert_cni_error(call, errors.TRY_AGAIN_LATER, "ovs-vswitchd is not running")
        ok(node.cni("DEL", conf_a, "pod-a"))
        assert node.port_uuids() == {} and node.records() == [] and node.leases() == []
        eventually(lambda: not monitor.states()["ovs"].healthy)
        ovs.stop_vswitchd()  # reaps it
        ovs.start_vswitchd()
        eventually(lambda: monitor.states()["ovs"].healthy, timeout=15)
        assert node.port_uuids() == {}
        ok(node.cni("DEL", conf_a, "pod-a"))
        ok(node.cni("ADD", conf_b, "pod-b", ns.path))
        ok(node.cni("DEL", conf_b, "pod-b"))
    assert not os.path.exists(node.root)
