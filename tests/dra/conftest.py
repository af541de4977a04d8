"""Fixtures for the DRA driver: the API server stand-in over HTTP, a resource manager on a
fake two-node sysfs, and the real kubernetes client pointed at the stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.dra import Node

from demo.apiserver_standin import ApiServerStandin
from dra.kube import KubeResources, api_client


@pytest.fixture
def apiserver() -> Iterator[ApiServerStandin]:
    server = ApiServerStandin().start()
    yield server
    server.stop()


@pytest.fixture
def kube(apiserver: ApiServerStandin, tmp_path: Path) -> Iterator[KubeResources]:
    resources = KubeResources(api_client(apiserver.kubeconfig(tmp_path / "kubeconfig")))
    yield resources
    resources.close()


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)
