"""Every example configuration in deploy/config/ is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config_file import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONFIG_DIR = DEPLOY / "config"
# The examples here and the agent configs the overlays ship in their ConfigMaps.
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml")) + sorted(DEPLOY.glob("overlays/*/config.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_example_config_is_valid(path: Path) -> None:
    config = load_config(path)
    assert config.pools, path
    assert len({p.name for p in config.pools}) == len(config.pools)


def test_examples_exist() -> None:
    assert (CONFIG_DIR / "config.yaml").exists()
