"""Fixtures for the deployment tests: a real kubectl (kustomize built in) and the renders."""

from __future__ import annotations

import pytest
from helpers.deploy import Renders, find_kubectl


@pytest.fixture(scope="session")
def kubectl() -> str:
    found = find_kubectl()
    if found is None:
        pytest.fail("no kubectl: install one (Debian image: /usr/bin/kubectl) or run "
                    "deploy/tools/fetch-kubectl.sh, or set KUBECTL=/path/to/kubectl")
    return found


@pytest.fixture(scope="session")
def renders(kubectl: str) -> Renders:
    return Renders(kubectl)
