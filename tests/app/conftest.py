"""numanet-app tests: pod views built in a temp directory, the CLI run in-process."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.ovs import private_ovs
from helpers.podview import PodView

from app.cli import main

__all__ = ["private_ovs"]  # re-exported: the data-path tests' OVS-DPDK (started on use)


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    @property
    def words(self) -> list[str]:
        return self.out.split()

    def failed_clearly(self, *needles: str) -> bool:
        """Exit 2, the message and what to do on stderr, nothing on stdout, no traceback."""
        lines = self.err.splitlines()
        return (self.code == 2 and self.out == "" and "Traceback" not in self.err
                and any(line.startswith("numanet-app: to fix: ") for line in lines)
                and all(n in self.err for n in needles))


Run = Callable[..., Ran]


@pytest.fixture
def pod(tmp_path: Path) -> PodView:
    return PodView(tmp_path / "pod")


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """``run(pod, "dpdk-args", "--cpus", "2-3")``: the pod's files written, its environment
    (and only numanet's part of it) set, numanet-app run."""

    def _run(view: PodView, command: str, *extra: str) -> Ran:
        view.write()
        for name in list(os.environ):
            if name.startswith(("NUMANET_", "PCIDEVICE_")) or name == "CONTAINER_NAME":
                monkeypatch.delenv(name)
        for name, value in view.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("HOSTNAME", "pod-a")
        capsys.readouterr()
        try:
            code = main(view.args(command, *extra))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return _run
