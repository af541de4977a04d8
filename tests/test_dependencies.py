"""DESIGN.md: "numa, vswitch, protos depend on nothing of ours; deviceplugin and cni use
them". Checked on the imports each module's source really makes (lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = {"numa", "vswitch", "protos", "deviceplugin", "cni"}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", ["numa", "vswitch", "protos"])
def test_base_packages_import_nothing_else_of_numanet(package: str) -> None:
    wrong = {str(path.relative_to(REPO)): sorted(imported_packages(path) - {package})
             for path in (REPO / package).rglob("*.py")}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import numa\n    from deviceplugin import naming\n")
    assert imported_packages(module) == {"numa", "deviceplugin"}
