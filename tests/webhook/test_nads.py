"""NAD sources: the API server (a stand-in speaking its REST shape over HTTPS) and files."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers.admission import TLSFiles, make_tls, nad

from webhook.nads import (
    ApiServerSource,
    DirectorySource,
    NadLookupError,
    resource_name_of,
)

TOKEN = "sa-token-123"
PREFIX = "/apis/k8s.cni.cncf.io/v1/namespaces/"


class _FakeApiServer(BaseHTTPRequestHandler):
    """Answers NAD GETs like kube-apiserver: 401 without the token, 403 for a namespace the
    role does not cover, 404 Status for a missing object, the object otherwise."""

    nads: dict[tuple[str, str], dict[str, Any]] = {}
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(self.path)
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":  # type: ignore[attr-defined]
            return self._json(401, {"kind": "Status", "reason": "Unauthorized", "code": 401})
        parts = self.path.removeprefix(PREFIX).split("/")
        if not self.path.startswith(PREFIX) or len(parts) != 3 \
                or parts[1] != "network-attachment-definitions":
            return self._json(404, {"kind": "Status", "reason": "NotFound", "code": 404})
        namespace, _, name = parts
        if namespace == "locked":
            return self._json(403, {"kind": "Status", "reason": "Forbidden", "code": 403})
        found = self.nads.get((namespace, name))
        if found is None:
            return self._json(404, {"kind": "Status", "reason": "NotFound", "code": 404})
        return self._json(200, found)

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def apiserver(tls: TLSFiles) -> Iterator[tuple[int, type[_FakeApiServer]]]:
    handler = type("Handler", (_FakeApiServer,), {
        "nads": {("default", "vhostuser-ovs"): nad("vhostuser-ovs", "numanet.io/vhostuser-ovs")},
        "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.token = TOKEN  # type: ignore[attr-defined]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls.cert, tls.key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield httpd.server_address[1], handler
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def sa_dir(tmp_path: Path, tls: TLSFiles) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text(TOKEN + "\n")
    (directory / "ca.crt").write_bytes(tls.ca.read_bytes())
    return directory


def test_in_cluster_source_reads_nads_with_the_service_account(apiserver, sa_dir, monkeypatch):
    port, handler = apiserver
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "localhost")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
    source = ApiServerSource.in_cluster(sa_dir)
    found = source.lookup("default", "vhostuser-ovs")
    assert found is not None and resource_name_of(found) == "numanet.io/vhostuser-ovs"
    assert source.lookup("default", "missing") is None
    assert handler.seen[0] == PREFIX + "default/network-attachment-definitions/vhostuser-ovs"


def test_rotated_token_is_picked_up_and_a_wrong_one_named(apiserver, sa_dir, tls):
    port, _ = apiserver
    source = ApiServerSource(f"https://localhost:{port}", sa_dir / "token", tls.ca)
    (sa_dir / "token").write_text("expired")
    with pytest.raises(NadLookupError, match="401"):
        source.lookup("default", "vhostuser-ovs")
    (sa_dir / "token").write_text(TOKEN)
    assert source.lookup("default", "vhostuser-ovs") is not None


def test_forbidden_names_the_rbac_rule(apiserver, sa_dir, tls):
    port, _ = apiserver
    source = ApiServerSource(f"https://localhost:{port}", sa_dir / "token", tls.ca)
    with pytest.raises(NadLookupError, match="403.*ClusterRole must allow get"):
        source.lookup("locked", "x")


def test_untrusted_or_unreachable_api_server(apiserver, sa_dir, tmp_path):
    port, _ = apiserver
    other = make_tls(tmp_path / "other")
    source = ApiServerSource(f"https://localhost:{port}", sa_dir / "token", other.ca)
    with pytest.raises(NadLookupError, match="cannot reach the API server.*CERTIFICATE_VERIFY"):
        source.lookup("default", "vhostuser-ovs")
    with socket.socket() as s:  # a port with nothing behind it
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    source = ApiServerSource(f"https://127.0.0.1:{dead}", sa_dir / "token", other.ca, timeout=2)
    with pytest.raises(NadLookupError, match="cannot reach the API server"):
        source.lookup("default", "vhostuser-ovs")


def test_in_cluster_needs_the_environment_and_the_token(sa_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(NadLookupError, match="--nad-dir"):
        ApiServerSource.in_cluster(sa_dir)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    with pytest.raises(NadLookupError, match="automountServiceAccountToken"):
        ApiServerSource.in_cluster(tmp_path / "nothing")


def test_directory_source_reloads_and_reports_bad_files(tmp_path):
    directory = tmp_path / "nads"
    directory.mkdir()
    (directory / "a.yaml").write_text(
        "---\n" + json.dumps(nad("a", "numanet.io/a")) + "\n---\nkind: ConfigMap\n")
    (directory / "notes.txt").write_text("ignored")
    source = DirectorySource(directory)
    assert source.lookup("default", "a") is not None
    assert source.lookup("default", "b") is None
    (directory / "b.json").write_text(json.dumps(nad("b", None, namespace="x")))
    assert source.lookup("x", "b") is not None and resource_name_of(source.lookup("x", "b")) is None
    (directory / "c.yaml").write_text("kind: NetworkAttachmentDefinition\nmetadata: {}\n")
    with pytest.raises(NadLookupError, match="c.yaml has no metadata.name"):
        source.lookup("default", "a")
    (directory / "c.yaml").write_text("key: [unclosed\n")
    with pytest.raises(NadLookupError, match="cannot read NAD file .*c.yaml"):
        source.lookup("default", "a")
    # A directory that vanishes (a ConfigMap volume being swapped) is a lookup error too.
    shutil.rmtree(directory)
    with pytest.raises(NadLookupError, match="cannot list NAD directory"):
        source.lookup("default", "a")
    with pytest.raises(NadLookupError, match="does not exist"):
        DirectorySource(tmp_path / "missing")
