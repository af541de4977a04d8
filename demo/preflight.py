"""Before anything starts: root, and every program the demo runs, with the one command
that installs what is missing (``--install`` runs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cni.install import find_relay
from demo.private_ovs import missing_ovs_parts

APT = ["apt-get", "install", "-y", "--no-install-recommends"]


class PreflightError(RuntimeError):
    """Something the demo needs is not there; the message says what to do."""


@dataclass(frozen=True)
class Tools:
    testpmd: str  # resolved path of dpdk-testpmd
    cni_bin_dir: Path  # where host-local (the IPAM plugin) lives: CNI_PATH
    numanet_cni: str  # the numanet CNI executable


@dataclass(frozen=True)
class Missing:
    what: str
    package: str


def require_root() -> None:
    if os.geteuid() != 0:
        raise PreflightError(
            "numanet demo must run as root: it starts OVS-DPDK, reserves hugepages, mounts "
            "hugetlbfs and creates network namespaces. Run: sudo make demo")


def install_command(missing: list[Missing]) -> str:
    packages = sorted({m.package for m in missing})
    return " ".join(APT + packages)


def find_missing(testpmd: str, cni_bin_dir: Path) -> list[Missing]:
    missing = [Missing(part, "openvswitch-switch-dpdk") for part in missing_ovs_parts()]
    if _resolve(testpmd) is None:
        missing.append(Missing(testpmd, "dpdk-dev"))
    host_local = cni_bin_dir / "host-local"
    if not os.access(host_local, os.X_OK):
        missing.append(Missing(str(host_local), "containernetworking-plugins"))
    if shutil.which("ip") is None:
        missing.append(Missing("ip", "iproute2"))
    return missing


def check(testpmd: str, cni_bin_dir: Path, install: bool) -> Tools:
    """Return the tools to use, or raise PreflightError naming the apt-get command."""
    require_root()
    missing = find_missing(testpmd, cni_bin_dir)
    if missing and install:
        _install(missing)
        missing = find_missing(testpmd, cni_bin_dir)
    if missing:
        names = ", ".join(f"{m.what} ({m.package})" for m in missing)
        raise PreflightError(
            f"missing {names}. Install with: {install_command(missing)}   (or let the demo "
            "do it: make demo DEMO_ARGS=--install)")
    cni = _numanet_cni()
    resolved = _resolve(testpmd)
    assert resolved is not None
    return Tools(testpmd=resolved, cni_bin_dir=cni_bin_dir, numanet_cni=cni)


def _resolve(program: str) -> str | None:
    if os.sep in program:
        return program if os.access(program, os.X_OK) else None
    return shutil.which(program)


def _numanet_cni() -> str:
    # What a node runs as /opt/cni/bin/numanet: the C relay when one is built (make relay),
    # else the Python shim installed beside this interpreter (the venv's), not some other.
    relay = find_relay()
    if relay is not None:
        return str(relay)
    beside = Path(sys.executable).parent / "numanet-cni"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("numanet-cni")
    if found:
        return found
    raise PreflightError(
        f"the numanet CNI executable (numanet-cni) is not installed beside {sys.executable}: "
        "install the package with `make venv` (pip install -e .)")


def _install(missing: list[Missing]) -> None:
    command = install_command(missing).split()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        # A fresh machine may not have package lists yet.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise PreflightError(f"{' '.join(command)} failed (exit {done.returncode}):\n{tail}")

