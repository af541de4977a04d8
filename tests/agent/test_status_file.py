"""The status file is rewritten when the agent's status changed, not on every round."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from agent.status_file import StatusWriter


def test_status_file_is_rewritten_only_when_the_status_changed(tmp_path: Path) -> None:
    state = {"used": 1}

    def build() -> dict[str, Any]:
        return {"updatedAt": time.time(), "pools": [{"used": state["used"]}]}

    path = tmp_path / "status.json"
    writer = StatusWriter(path, build)
    writer.write()
    first = json.loads(path.read_text())
    inode = os.stat(path).st_ino
    writer.write()  # a refresh round that changed nothing
    assert os.stat(path).st_ino == inode and json.loads(path.read_text()) == first

    state["used"] = 2
    writer.write()
    second = json.loads(path.read_text())
    assert os.stat(path).st_ino != inode  # replaced atomically, as every write is
    assert second["pools"] == [{"used": 2}] and second["updatedAt"] > first["updatedAt"]

    path.unlink()  # someone removed it: the next round puts it back
    writer.write()
    assert json.loads(path.read_text())["pools"] == [{"used": 2}]


def test_status_file_is_for_root_only(tmp_path: Path) -> None:
    """It names the config, socket paths and why a vSwitch is down: not for other users."""
    path = tmp_path / "status.json"
    StatusWriter(path, lambda: {"pid": 1}).write()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
