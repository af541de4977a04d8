"""deploy/webhook/make-tls.sh --no-apply: the certificate it makes is served by the webhook
and trusted, under the Service's DNS names, by a client holding only the caBundle."""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from helpers.deploy import DEPLOY

from webhook.nads import DirectorySource
from webhook.server import WebhookServer

SCRIPT = DEPLOY / "webhook" / "make-tls.sh"


class _ServiceNameConnection(http.client.HTTPSConnection):
    """Connects to 127.0.0.1 but checks the certificate for the in-cluster Service name."""

    def __init__(self, port: int, server_name: str, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", port, context=context, timeout=10)
        self._server_name = server_name
        self._ctx = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self._server_name)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("namespace", ["numanet-system", "netops"])
def test_certificate_is_served_and_trusted_for_the_service_names(tmp_path: Path, namespace):
    out = tmp_path / "tls"
    proc = subprocess.run(["sh", str(SCRIPT), "--no-apply", "--out", str(out),
                           "--namespace", namespace], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    assert out.joinpath("tls.key").stat().st_mode & 0o077 == 0  # the key is private
    nads = tmp_path / "nads"
    nads.mkdir()
    context = ssl.create_default_context(cafile=str(out / "ca.crt"))
    with WebhookServer(("127.0.0.1", 0), out / "tls.crt", out / "tls.key",
                       DirectorySource(nads), "numanet.io") as server:
        for name in (f"numanet-webhook.{namespace}.svc",
                     f"numanet-webhook.{namespace}.svc.cluster.local"):
            conn = _ServiceNameConnection(server.port, name, context)
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
            conn.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            _ServiceNameConnection(server.port, "numanet-webhook.elsewhere.svc",
                                   context).request("GET", "/healthz")


def test_unknown_argument_is_refused():
    proc = subprocess.run(["sh", str(SCRIPT), "--bogus"], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 2 and "unknown argument --bogus" in proc.stderr
