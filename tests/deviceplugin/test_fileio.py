"""The one-JSON-file-per-key directories (allocations, DRA claims) read back at start."""

from __future__ import annotations

import json
from pathlib import Path

from deviceplugin.fileio import load_json_files


def _parse(data: dict) -> dict:
    return {"key": data["key"], "n": int(data["n"])}


def test_good_files_load_and_bad_ones_are_dropped(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"key": "a", "n": 1}))
    (tmp_path / "b.json").write_text("{torn")  # half written
    (tmp_path / "c.json").write_text(json.dumps({"key": "other", "n": 2}))  # wrong name
    (tmp_path / "d.json").write_text(json.dumps({"n": 3}))  # the parser refuses it
    (tmp_path / "e.txt").write_text("not a record")
    records = load_json_files(tmp_path, _parse, lambda r: r["key"], "record")
    assert records == {"a": {"key": "a", "n": 1}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "e.txt"]


def test_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert load_json_files(tmp_path / "none", _parse, lambda r: r["key"], "record") == {}
