"""The compiled relay (``cni/relay.c``) against the Python shim it stands in for: the same
answers byte for byte where the plugin answers itself (VERSION, a config too large, the
agent not reachable, not answering, answering badly), the same request on the agent's
socket, and never a traceback or a crash whatever stdin holds.

The behaviours both share (the agent's exit code and stdout relayed, early answers) are
run against both plugins in test_shim.py and through every recorded peer (tests/peers)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers.cni_shim import RELAY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni import shim

pytestmark = pytest.mark.skipif(not RELAY.exists(), reason="the relay is not built (make relay)")

SHIM_SOURCE = Path(shim.__file__)


def both(env: dict[str, str], stdin: bytes) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """(exit code, stdout) of the Python shim (as installed: -IS) and of the relay."""
    answers = []
    for cmd in ([sys.executable, "-IS", str(SHIM_SOURCE)], [str(RELAY)]):
        done = subprocess.run(cmd, input=stdin, env={"PATH": "/usr/bin:/bin", **env},
                              capture_output=True, timeout=30)
        assert b"Traceback" not in done.stdout + done.stderr
        assert done.returncode >= 0, f"{cmd[0]} died of signal {-done.returncode}"
        answers.append((done.returncode, done.stdout))
    return answers[0], answers[1]


def relay_version(stdin: bytes) -> str:
    done = subprocess.run([str(RELAY)], input=stdin, env={"CNI_COMMAND": "VERSION"},
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done
    return str(json.loads(done.stdout)["cniVersion"])


VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "0.2.0", "2.0.0", ""]
CASES = [
    b"", b"{}", b"[]", b'"1.0.0"', b"null", b'{"cniVersion": "0.4.0"}',
    b'  {"cniVersion":"0.3.1"}  \n', b'{"cniVersion": "0.4.0"} x', b'{"cniVersion": "0.4.0",}',
    b'{"cniVersion": "0.4.0", "cniVersion": "1.0.0"}', b'{"cniVersion": "1.0.0", "cniVersion": 1}',
    b'{"cniVersion": 1.0}', b'{"a": {"cniVersion": "0.4.0"}}', b'{"cni\\u0056ersion": "0.4.0"}',
    b'{"cniVersion": "0\\u002e4.0"}', b'{"cniVersion": "0.4.0\\u0000"}',
    b'\xef\xbb\xbf{"cniVersion": "0.4.0"}', '{"cniVersion": "0.4.0"}'.encode("utf-16"),
    '{"cniVersion": "1.0.0"}'.encode("utf-16-le"), '{"cniVersion": "1.0.0"}'.encode("utf-32"),
    '{"cniVersion": "0.3.0"}'.encode("utf-32-be"), b'{"cniVersion": "0.4.0", "x": "\xff"}',
    b'{"cniVersion": "0.4.0", "x": "\xed\xa0\x80"}', b'{"cniVersion": "0.4.0", "x": "\x01"}',
    b'{"cniVersion": "0.4.0", "n": [NaN, Infinity, -Infinity, -0.5e+3, 1E5, 0]}',
    b'{"cniVersion": "0.4.0", "n": 01}', b'{"cniVersion": "0.4.0", "n": 1.}',
    b'{"cniVersion": "0.4.0", "n": 1e}', b'{"cniVersion": "0.4.0", "n": -}',
    b'{"cniVersion": "0.4.0", "s": "\\ud83d\\ude00 \\ud800 \\udc00"}',
    b'{"cniVersion": "0.4.0", "s": "\\x"}', b'{"cniVersion": "0.4.0" "x": 1}',
    b'{"cniVersion": "0.4.0", "t": [true, false, null]}', b'{"cniVersion": "0.4.0", "t": tru}',
    b"[" * 50 + b"]" * 50, b'{"cniVersion": "0.4.0", "d": ' + b"[" * 500 + b"]" * 500 + b"}",
    b'{"cniVersion": "0.4.0", "d": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"cniVersion": "0.4.0"}\x00', b"\x00\x00", b'{"cniVersion": "\xc3\xa9"}',
]


@pytest.mark.parametrize("stdin", CASES)
def test_version_answers_alike(stdin: bytes):
    python, relay = both({"CNI_COMMAND": "VERSION"}, stdin)
    assert python == relay


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8)
    | st.sampled_from(VERSIONS),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["cniVersion", "name", "x", "cni\u00e9"])
                      | st.text(max_size=4), children, max_size=4),
    max_leaves=12),
    st.sampled_from(["utf-8", "utf-16", "utf-32-le", "utf-8-sig"]),
    st.integers(min_value=0, max_value=3), st.binary(max_size=3))
def test_the_version_of_any_config_is_read_alike(doc, encoding, cut, noise):
    """json.loads' verdict on random documents, their encodings, cut short or with junk."""
    text = json.dumps(doc, ensure_ascii=bool(cut & 1)).encode(encoding)
    for stdin in (text, text[:-cut] if cut else text + noise):
        assert relay_version(stdin) == shim._requested_version(stdin), stdin


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=40))
def test_the_version_of_any_bytes_is_read_alike(stdin):
    assert relay_version(b'{"cniVersion": "0.4.0", "x": ' + stdin + b"}") == \
        shim._requested_version(b'{"cniVersion": "0.4.0", "x": ' + stdin + b"}")
    assert relay_version(stdin) == shim._requested_version(stdin)


@pytest.mark.parametrize("name", ["agent.sock", "ag\u00e9nt \"quoted\"\\.sock", "\U0001f600.sock"])
def test_an_unreachable_agent_is_answered_alike(tmp_path, name):
    path = os.fsencode(tmp_path / name)
    env = {"CNI_COMMAND": "ADD", "NUMANET_CNI_SOCKET": os.fsdecode(path)}
    python, relay = both(env, b'{"cniVersion": "0.3.1"}')
    assert python == relay
    assert python[0] == 1 and json.loads(python[1])["code"] == 11


def test_a_socket_path_of_undecodable_bytes_is_shown_alike(tmp_path):
    path = os.fsencode(tmp_path) + b"/\xff\xfe-\xc3(.sock"
    done = []
    for cmd in ([sys.executable, "-IS", str(SHIM_SOURCE)], [str(RELAY)]):
        done.append(subprocess.run(cmd, input=b"{}", capture_output=True, timeout=30,
                                   env={b"PATH": b"/usr/bin:/bin", b"CNI_COMMAND": b"DEL",
                                        b"NUMANET_CNI_SOCKET": path}).stdout)
    assert done[0] == done[1] and b"\\udcff\\udcfe-\\udcc3(" in done[0]


def test_a_socket_path_too_long_for_af_unix_is_answered_alike(tmp_path):
    env = {"CNI_COMMAND": "ADD", "NUMANET_CNI_SOCKET": str(tmp_path / ("x" * 120))}
    python, relay = both(env, b"{}")
    assert python == relay and b"AF_UNIX path too long" in python[1]


def test_the_default_socket_is_named_alike():
    if os.path.exists(shim.DEFAULT_SOCKET):
        pytest.skip(f"an agent serves {shim.DEFAULT_SOCKET} on this machine")
    python, relay = both({"CNI_COMMAND": "CHECK", "NUMANET_CNI_SOCKET": ""}, b"{}")
    assert python == relay and shim.DEFAULT_SOCKET.encode() in python[1]


def test_a_config_too_large_is_refused_alike_without_the_agent(tmp_path):
    stdin = b'{"cniVersion": "0.4.0", "pad": "' + b"x" * shim.MAX_STDIN_BYTES + b'"}'
    env = {"CNI_COMMAND": "ADD", "NUMANET_CNI_SOCKET": str(tmp_path / "none.sock")}
    python, relay = both(env, stdin)
    assert python == relay and json.loads(python[1])["code"] == 6
    # Exactly the limit is relayed (and so reaches the absent agent: code 11).
    python, relay = both(env, b" " * (shim.MAX_STDIN_BYTES - 2) + b"{}")
    assert python == relay and json.loads(python[1])["code"] == 11


def _agent(path: Path, reply: bytes, seen: list[bytes], read: bool = True) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(2)

    def serve() -> None:
        with server:
            for _ in range(2):
                conn, _ = server.accept()
                with conn:
                    data = b""
                    while read:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    seen.append(data)
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_the_request_on_the_socket_is_the_shims_byte_for_byte(tmp_path):
    path = tmp_path / "agent.sock"
    seen: list[bytes] = []
    thread = _agent(path, b"0\n{}", seen)
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/1/ns/net",
           "CNI_IFNAME": "net1", "CNI_ARGS": "K8S_POD_NAME=a;X=\u00e9", "CNI_PATH": "",
           "OTHER": "not relayed", "NUMANET_CNI_SOCKET": str(path)}
    stdin = b'{"cniVersion": "1.0.0", "name": "n"}'
    python, relay = both(env, stdin)
    thread.join(10)
    assert python == relay == (0, b"{}")
    assert seen[0] == seen[1]
    assert seen[0] == (b"numanet-cni 1\nCNI_COMMAND=ADD\0CNI_CONTAINERID=c1\0"
                       b"CNI_NETNS=/proc/1/ns/net\0CNI_IFNAME=net1\0"
                       b"CNI_ARGS=K8S_POD_NAME=a;X=\xc3\xa9\0CNI_PATH=\0\0" + stdin)


@pytest.mark.parametrize("reply", [b"0\n", b"7\nout", b"\n", b"x\n", b"12", b"",
                                   b"1\n" + b"y" * (4 << 20)])
def test_any_answer_of_the_agent_is_relayed_or_refused_alike(tmp_path, reply):
    path = tmp_path / "agent.sock"
    thread = _agent(path, reply, [])
    python, relay = both({"CNI_COMMAND": "DEL", "NUMANET_CNI_SOCKET": str(path)}, b"{}")
    thread.join(10)
    assert python == relay


def test_a_silent_agent_is_answered_alike(tmp_path):
    path = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)  # accepts (the backlog), never answers
    try:
        env = {"CNI_COMMAND": "ADD", "NUMANET_CNI_SOCKET": str(path),
               "NUMANET_CNI_TIMEOUT": "0.3"}
        python, relay = both(env, b'{"cniVersion": "1.0.0"}')
    finally:
        server.close()
    assert python == relay and b"did not answer within 0.3 s" in python[1]


@pytest.mark.parametrize("timeout", ["abc", "", "-1", "0", "nan", "inf", "1e400", "0x10"])
def test_a_timeout_that_is_no_positive_number_means_the_default(timeout):
    assert shim._timeout({b"NUMANET_CNI_TIMEOUT": timeout.encode()}) == shim.DEFAULT_TIMEOUT


def test_run_by_hand_it_says_what_it_is():
    """On a terminal without CNI_COMMAND: a line on stderr, exit 1 (as the shim)."""
    import pty

    outputs = []
    for cmd in ([sys.executable, "-IS", str(SHIM_SOURCE)], [str(RELAY)]):
        leader, follower = pty.openpty()
        try:
            done = subprocess.run(cmd, stdin=follower, capture_output=True, timeout=30,
                                  env={"PATH": "/usr/bin:/bin"})
        finally:
            os.close(leader)
            os.close(follower)
        outputs.append((done.returncode, done.stdout, done.stderr))
    assert outputs[0] == outputs[1] and outputs[0][0] == 1 and b"CNI_COMMAND" in outputs[0][2]
