"""The kit as one file (``make app-pyz``): built by the script the Makefile and the testpmd
image use, run by a bare python3 outside the repository, and by Python 3.9 when the
machine has one; the package imports nothing but the standard library and itself."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "deploy" / "tools" / "build-app-pyz.sh"
APP = REPO / "app"


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pyz") / "numanet-app.pyz"
    done = subprocess.run(["sh", str(BUILD), str(out)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and os.access(out, os.X_OK)
    return out


def _python39() -> str | None:
    """A Python 3.9 that runs: $NUMANET_TEST_PYTHON39, pyenv's, or python3.9 on PATH (a
    pyenv shim there may name a version that is not selected, so each is tried)."""
    candidates = [os.environ.get("NUMANET_TEST_PYTHON39"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))),
                  shutil.which("python3.9")]
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30)
        if done.returncode == 0 and done.stdout.strip() == "(3, 9)":
            return candidate
    return None


def _run(cmd: list[str], pod, cwd: Path) -> subprocess.CompletedProcess[str]:
    pod.write()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": "pod-a", **pod.env}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def _view(pod):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0, mac="02:00:00:00:00:01")
    pod.slot("memif-ovs", "memif", "slave", node=0, ifname="net2", queues=2)
    pod.hugepages("/hugepages", "2M", request_mib=512)


def test_the_pyz_runs_alone_and_says_what_the_package_says(pyz, pod, run, tmp_path):
    _view(pod)
    for command in (["dpdk-args", "--cpus", "2-3", "--testpmd", "--json"],
                    ["interfaces", "--json"], ["vpp-config", "--cpus", "2-3", "--cli"]):
        expected = run(pod, command[0], *command[1:])
        ran = _run([str(pyz), *pod.args(command[0], *command[1:])], pod, tmp_path)
        assert (ran.returncode, ran.stdout, ran.stderr) == (0, expected.out, expected.err)
    # Exit status and message survive the zipapp's entry point.
    failed = _run([str(pyz), *pod.args("dpdk-args", "--cpus", "4")], pod, tmp_path)
    assert failed.returncode == 2 and "not on the NUMA node" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_reader_that_goes_away_is_not_an_error(pyz, pod, tmp_path):
    for i in range(120):  # more than a pipe holds (64 KiB)
        pod.slot(f"vhost{i}-ovs", "vhost-user", "server", node=0, ifname=f"net{i}")
    pod.write()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **pod.env}
    line = f"{pyz} interfaces --json --root {pod.root} | head -c 10"
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0 and done.stdout == "{\n  \"inter" and done.stderr == ""


def test_the_pyz_runs_on_python_3_9(pyz, pod, run, tmp_path):
    python = _python39()
    if python is None:
        pytest.skip("no python3.9 here (NUMANET_TEST_PYTHON39 names one)")
    _view(pod)
    for command in (["dpdk-args", "--cpus", "2-3"], ["interfaces"], ["vpp-config"]):
        expected = run(pod, command[0], *command[1:])
        ran = _run([python, str(pyz), *pod.args(command[0], *command[1:])], pod, tmp_path)
        assert (ran.returncode, ran.stdout) == (0, expected.out), ran.stderr


def test_the_package_uses_only_the_standard_library_and_python_3_9_syntax():
    modules = sorted(APP.glob("*.py"))
    assert {m.stem for m in modules} >= {"cli", "view", "eal", "vpp", "__main__"}
    for module in modules:
        tree = ast.parse(module.read_text(), str(module), feature_version=(3, 9))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                assert top == "app" or top in sys.stdlib_module_names or top == "__future__", \
                    f"{module.name} imports {name}: the kit must stay stdlib-only"


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "numanet-app"
    assert script.exists(), "pip install -e . (make venv) installs numanet-app"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "dpdk-args" in done.stdout
    assert json.loads(subprocess.run(
        [str(script), "interfaces", "--json", "--root", "/nonexistent"], capture_output=True,
        text=True, timeout=30).stdout)["interfaces"] == []
