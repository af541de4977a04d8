"""The webhook's HTTPS server: ``POST /mutate`` and ``GET /healthz``, stdlib only.

TLS handshakes run in the per-connection thread (not in the accept loop), so one stalled
client cannot hold up the others. The certificate is re-read when the mounted secret
changes, so a rotated certificate is served without a restart.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from webhook.admission import Answer, handle
from webhook.nads import NadSource

log = logging.getLogger(__name__)

MAX_BODY = 4 << 20  # the API server sends pods of a few hundred kB at most
_RELOAD_CHECK_SECONDS = 10.0
_POLL_SECONDS = 0.1


class _TLSFiles:
    """An SSLContext that picks up a new cert/key pair when the files change."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = Path(cert), Path(key)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp = self._read_stamp()
        self._load()

    def _read_stamp(self) -> tuple[int, int]:
        try:
            return (os.stat(self.cert).st_mtime_ns, os.stat(self.key).st_mtime_ns)
        except OSError as exc:
            raise OSError(exc.errno, f"TLS file missing: {exc.filename}: mount the webhook's "
                          "TLS secret (see deploy/webhook/README.md)") from None

    def _load(self) -> None:
        try:
            self.context.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            raise ssl.SSLError(f"cannot load TLS certificate {self.cert} with key {self.key}: "
                               f"{exc}") from None

    def maybe_reload(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._checked < _RELOAD_CHECK_SECONDS:
                return
            self._checked = now
            try:
                stamp = self._read_stamp()
                if stamp != self._stamp:
                    self._load()
                    self._stamp = stamp
                    log.info("reloaded TLS certificate cert=%s", self.cert)
            except (OSError, ssl.SSLError) as exc:
                # Mid-rotation: keep serving the old pair, try again later.
                log.warning("TLS reload failed, keeping the previous certificate cert=%s "
                            "error=%s", self.cert, exc)


class _Handler(BaseHTTPRequestHandler):
    server: _WebhookHTTPServer
    timeout = 15  # handshake + request: the API server's call times out at 10 s by default
    protocol_version = "HTTP/1.1"

    def handle(self) -> None:
        try:
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()  # here, in this connection's thread
            super().handle()
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            log.debug("connection dropped client=%s error=%s", self.client_address[0], exc)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?", 1)[0] == "/healthz":
            self._send(Answer(200, b"ok\n", "text/plain"))
        else:
            self._send(Answer(404, b"not found: POST /mutate, GET /healthz\n", "text/plain"))

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/mutate":
            self._send(Answer(404, b"not found: POST /mutate\n", "text/plain"))
            return
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        if ctype != "application/json":
            self._send(Answer(415, f"Content-Type {ctype!r} is not application/json\n".encode(),
                              "text/plain"))
            return
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self._send(Answer(411, b"Content-Length is required\n", "text/plain"))
            return
        if length <= 0 or length > MAX_BODY:
            self._send(Answer(400 if length <= 0 else 413,
                              f"body of {length} bytes: expected 1 to {MAX_BODY}\n".encode(),
                              "text/plain"))
            self.close_connection = True
            return
        body = self.rfile.read(length)
        self._send(self.server.answer(body))

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("webhook http client=%s %s", self.client_address[0], format % args)


class _WebhookHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], tls: _TLSFiles,
                 answer: Callable[[bytes], Answer]) -> None:
        self.tls = tls
        self.answer = answer
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("webhook request failed client=%s", client_address[0], exc_info=True)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        self.tls.maybe_reload()
        wrapped = self.tls.context.wrap_socket(sock, server_side=True,
                                               do_handshake_on_connect=False)
        return wrapped, addr


class WebhookServer:
    """Serves admission reviews until ``stop``; ``port`` is the bound port."""

    def __init__(self, address: tuple[str, int], cert: Path, key: Path,
                 source: NadSource, prefix: str) -> None:
        self._tls = _TLSFiles(cert, key)
        self._httpd = _WebhookHTTPServer(address, self._tls,
                                         lambda body: handle(body, source, prefix))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def serve_forever(self) -> None:
        # A short poll keeps stop() quick (shutdown waits for the loop to look).
        self._httpd.serve_forever(poll_interval=_POLL_SECONDS)

    def start(self) -> WebhookServer:
        self._thread = threading.Thread(target=self.serve_forever,
                                        name="numanet-webhook", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
