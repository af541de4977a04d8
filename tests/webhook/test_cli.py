"""``numanet webhook`` as a process: starts from flags, serves, stops on SIGTERM."""

from __future__ import annotations

import copy
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.admission import Client, make_tls

from webhook import resource_prefix


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _numanet(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", "webhook", *args]


def test_webhook_process_serves_and_stops_on_sigterm(tls, nad_dir, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("resourcePrefix: numanet.io\npools: []\n")
    port = _free_port()
    proc = subprocess.Popen(
        _numanet("--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--address",
                 "127.0.0.1", "--port", str(port), "--nad-dir", str(nad_dir),
                 "--config", str(config)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = Client(port, tls.ca)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert client.post_raw(b"", "x", "/healthz", "GET")[0] == 200
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        pod = {"metadata": {"name": "p", "annotations": {
            "k8s.v1.cni.cncf.io/networks": "vhostuser-ovs"}},
            "spec": {"containers": [{"name": "c", "resources": {}}], "volumes": []}}
        response = client.review(copy.deepcopy(pod))
        assert response["allowed"] is True and response["patchType"] == "JSONPatch"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "pod admitted pod=default/p" in err and "numanet.io/vhostuser-ovs=1" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("extra, message", [
    (["--tls-cert", "/nonexistent/tls.crt"], "TLS file missing: /nonexistent/tls.crt"),
    (["--resource-prefix", "Not_A_Prefix"], "is not a DNS subdomain"),
    (["--nad-dir", "/nonexistent-nads"], "NAD directory /nonexistent-nads does not exist"),
])
def test_bad_flags_stop_with_a_message(tls, nad_dir, extra, message):
    args = ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--port", "0",
            "--address", "127.0.0.1", "--nad-dir", str(nad_dir), *extra]
    proc = subprocess.run(_numanet(*args), capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_key_that_does_not_match_the_certificate(tls, tmp_path, nad_dir):
    other = make_tls(tmp_path / "other")
    proc = subprocess.run(_numanet("--tls-cert", str(tls.cert), "--tls-key", str(other.key),
                                   "--port", "0", "--nad-dir", str(nad_dir)),
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert f"cannot load TLS certificate {tls.cert} with key {other.key}" in proc.stderr


def test_resource_prefix_comes_from_flag_then_config_then_default(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("resourcePrefix: example.com\n")
    assert resource_prefix(config, None) == "example.com"
    assert resource_prefix(config, "other.io") == "other.io"
    assert resource_prefix(None, None) == "numanet.io"
    config.write_text("pools: []\n")
    assert resource_prefix(config, None) == "numanet.io"
    config.write_text("resourcePrefix: BAD!\n")
    with pytest.raises(ValueError, match="resourcePrefix"):
        resource_prefix(config, None)
    config.write_text("- a list\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        resource_prefix(config, None)
