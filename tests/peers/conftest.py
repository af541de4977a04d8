"""Every recorded peer's calls go through both CNI plugins: the Python shim and the
compiled relay (``cni/relay.c``, when built), which must answer alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.cni_shim import plugin_params, use_plugin


@pytest.fixture(autouse=True, params=plugin_params())
def cni_plugin(request: pytest.FixtureRequest) -> Iterator[str]:
    use_plugin(request.param)
    try:
        yield request.param
    finally:
        use_plugin("shim")
