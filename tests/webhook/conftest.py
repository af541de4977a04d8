"""Fixtures for the webhook tests: TLS files, a NAD directory, a live HTTPS server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.admission import STANDARD_NADS, Client, TLSFiles, make_tls

from webhook.nads import DirectorySource
from webhook.server import WebhookServer


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    return make_tls(tmp_path / "tls")


@pytest.fixture
def nad_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "nads"
    directory.mkdir()
    (directory / "nads.json").write_text(json.dumps(STANDARD_NADS[0]))
    (directory / "more.yaml").write_text(yaml.safe_dump_all(STANDARD_NADS[1:]))
    return directory


@pytest.fixture
def server(tls: TLSFiles, nad_dir: Path) -> Iterator[WebhookServer]:
    with WebhookServer(("127.0.0.1", 0), tls.cert, tls.key, DirectorySource(nad_dir),
                       "numanet.io") as srv:
        yield srv


@pytest.fixture
def client(server: WebhookServer, tls: TLSFiles) -> Client:
    return Client(server.port, tls.ca)
