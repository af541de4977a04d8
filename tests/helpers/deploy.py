"""Deployment test helpers: where deploy/ is, a real kubectl, rendered kustomizations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("ovs-only", "vpp-only", "both")


def find_kubectl() -> str | None:
    """$KUBECTL, then kubectl on PATH, then the venv's (deploy/tools/fetch-kubectl.sh)."""
    candidates = [os.environ.get("KUBECTL"), shutil.which("kubectl"),
                  str(Path(sys.executable).parent / "kubectl")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def kustomizations() -> list[Path]:
    """Every kustomization under deploy/ (deploy/config holds plain agent configs)."""
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


class Renders:
    """``kubectl kustomize`` output per directory, rendered once per session."""

    def __init__(self, kubectl: str) -> None:
        self.kubectl = kubectl
        self._cache: dict[Path, list[dict[str, Any]]] = {}

    def __call__(self, directory: Path) -> list[dict[str, Any]]:
        if directory not in self._cache:
            proc = subprocess.run([self.kubectl, "kustomize", str(directory)],
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, f"kubectl kustomize {directory}: {proc.stderr}"
            self._cache[directory] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return self._cache[directory]

    def overlay(self, name: str) -> list[dict[str, Any]]:
        return self(DEPLOY / "overlays" / name)



def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
