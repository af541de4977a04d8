"""A private OVS-DPDK (ovsdb-server + ovs-vswitchd-dpdk) under one directory.

Used by ``numanet demo`` and by the tests: everything the instance needs (database,
sockets, logs, pid files) lives under ``base_dir``, DPDK runs with ``--no-pci`` and a
file prefix derived from ``base_dir``, so several instances and the host's own OVS never
collide. The recipe and its traps are in the project notes (ovs-dpdk.md):

- ``--no-huge`` needs ``--legacy-mem`` and ``per-port-memory=true``;
- ``pmd-maxsleep`` keeps the PMD thread from spinning a whole core;
- ``dpdk_initialized`` stays true after a failed start, so liveness is the process.

The daemons run as children of this process (no ``--detach``) so they are reaped when
they stop; a leftover instance of a killed earlier run in the same directory is found
through its pid files and stopped before a new one starts. vswitchd runs in a network
namespace of its own: the netdev datapath creates kernel taps (``ovs-netdev`` and one per
bridge) that would otherwise collide between instances and outlive a killed one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

VSWITCHD_DPDK = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
INSTALL_HINT = "apt-get install -y --no-install-recommends openvswitch-switch-dpdk"
DPDK_RUNTIME_DIR = Path("/var/run/dpdk")
_TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vsctl", "ovs-appctl")
_SUN_PATH_MAX = 107
_LOG_TAIL_LINES = 25


class OvsNotInstalled(RuntimeError):
    """The Debian OVS-DPDK packages are missing; the message says what to install."""


class OvsStartError(RuntimeError):
    """ovsdb-server or ovs-vswitchd-dpdk did not come up; the message carries the log tail."""


def missing_ovs_parts() -> list[str]:
    """Programs and files a private OVS-DPDK needs that are not on this machine."""
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    missing += [path for path in (VSWITCHD_DPDK, SCHEMA) if not os.path.exists(path)]
    return missing


def _default_cpu_masks() -> tuple[str, str]:
    """DPDK lcore on the lowest allowed CPU, the PMD on the next one (same one if alone)."""
    cpus = sorted(os.sched_getaffinity(0))
    lcore = cpus[0]
    pmd = cpus[1] if len(cpus) > 1 else cpus[0]
    return hex(1 << lcore), hex(1 << pmd)


def _hugetlbfs_mounts() -> set[str]:
    mounts: set[str] = set()
    with open("/proc/mounts", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "hugetlbfs":
                mounts.add(fields[1].replace("\\040", " "))
    return mounts


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(log {path} is empty)"


def _pid_state(pid: int) -> str | None:
    """Process state letter from /proc, None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    # A zombie has exited: a detached daemon whose parent does not reap stays one forever.
    return _pid_state(pid) not in (None, "Z", "X")


def _accepts(path: str) -> bool:
    """Something listens on the unix socket (a stale file of a stopped server does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return not _alive(pid)


class PrivateOvs:
    """ovsdb-server + ovs-vswitchd-dpdk under ``base_dir``; a context manager.

    ``hugepage_dir`` None runs DPDK without hugepages (``--no-huge -m socket_mem_mb``);
    otherwise it must be a mounted hugetlbfs with ``socket_mem_mb`` of free pages (OVS
    then runs DPDK ``--in-memory``: the pages come back when vswitchd exits).
    ``own_netns`` runs vswitchd in a network namespace of its own (``unshare --net``).
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        hugepage_dir: str | os.PathLike[str] | None = None,
        socket_mem_mb: int = 1024,
        pmd_cpu_mask: str | None = None,
        lcore_mask: str | None = None,
        pmd_maxsleep_us: int = 10000,
        start_timeout: float = 30.0,
        own_netns: bool = True,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.rundir = self.base_dir / "run"
        self.dbdir = self.base_dir / "db"
        self.logdir = self.base_dir / "log"
        self.db_socket = str(self.rundir / "db.sock")
        self.db = f"unix:{self.db_socket}"
        self.hugepage_dir = Path(hugepage_dir).absolute() if hugepage_dir else None
        self.socket_mem_mb = int(socket_mem_mb)
        default_lcore, default_pmd = _default_cpu_masks()
        self.lcore_mask = lcore_mask or default_lcore
        self.pmd_cpu_mask = pmd_cpu_mask or default_pmd
        self.pmd_maxsleep_us = pmd_maxsleep_us
        self.start_timeout = start_timeout
        self.own_netns = own_netns
        # Derived from the directory, so a leftover of a killed run here has the same one.
        digest = hashlib.sha256(str(self.base_dir).encode()).hexdigest()[:10]
        self.file_prefix = f"nnovs-{digest}"
        self._ovsdb: subprocess.Popen[bytes] | None = None
        self._vswitchd: subprocess.Popen[bytes] | None = None

    # -- paths and environment -------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """Environment for ovs-vsctl / ovs-appctl / ovs-ofctl against this instance."""
        env = dict(os.environ)
        env.update(
            OVS_RUNDIR=str(self.rundir),
            OVS_DBDIR=str(self.dbdir),
            OVS_LOGDIR=str(self.logdir),
            DB_SOCK=self.db_socket,
        )
        return env

    @property
    def vswitchd_ctl(self) -> str:
        return str(self.rundir / "ovs-vswitchd.ctl")

    @property
    def ovsdb_ctl(self) -> str:
        return str(self.rundir / "ovsdb-server.ctl")

    @property
    def vswitchd_log(self) -> Path:
        return self.logdir / "ovs-vswitchd.log"

    @property
    def ovsdb_log(self) -> Path:
        return self.logdir / "ovsdb-server.log"

    @property
    def dpdk_runtime_dir(self) -> Path:
        return DPDK_RUNTIME_DIR / self.file_prefix

    @property
    def vswitchd_pid(self) -> int | None:
        return self._vswitchd.pid if self._vswitchd and self._vswitchd.poll() is None else None

    @property
    def ovsdb_pid(self) -> int | None:
        return self._ovsdb.pid if self._ovsdb and self._ovsdb.poll() is None else None

    def vswitchd_alive(self) -> bool:
        return self.vswitchd_pid is not None

    # -- commands ----------------------------------------------------------------------

    def vsctl(self, *args: str, wait: bool = True, timeout: float = 10.0) -> str:
        """Run ``ovs-vsctl`` against this instance; returns stdout without the trailing newline.

        As plain ovs-vsctl, a change waits for vswitchd to apply it; ``wait=False`` passes
        ``--no-wait``.
        """
        cmd = ["ovs-vsctl", f"--db={self.db}", f"--timeout={max(1, int(timeout))}"]
        if not wait:
            cmd.append("--no-wait")
        return self._run([*cmd, *args], timeout=timeout + 2)

    def appctl(self, target: str, *args: str, timeout: float = 10.0) -> str:
        """``ovs-appctl -t <target ctl socket>``; target is "vswitchd" or "ovsdb"."""
        ctl = self.vswitchd_ctl if target == "vswitchd" else self.ovsdb_ctl
        return self._run(
            ["ovs-appctl", "-t", ctl, f"--timeout={max(1, int(timeout))}", *args],
            timeout=timeout + 2,
        )

    def _run(self, cmd: list[str], timeout: float) -> str:
        try:
            done = subprocess.run(
                cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{' '.join(cmd)} did not finish in {timeout:.0f} s") from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed (exit {done.returncode}): {done.stderr.strip()}"
            )
        return done.stdout.rstrip("\n")

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> PrivateOvs:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> PrivateOvs:
        """Start both daemons; returns once vswitchd has initialised DPDK and applied the config."""
        missing = missing_ovs_parts()
        if missing:
            raise OvsNotInstalled(
                f"OVS-DPDK is not installed (missing: {', '.join(missing)}); install it with: "
                f"{INSTALL_HINT}"
            )
        if self._ovsdb is not None:
            raise RuntimeError(f"private OVS in {self.base_dir} is already started")
        if len(self.db_socket) > _SUN_PATH_MAX:
            raise ValueError(
                f"base_dir {self.base_dir} is too long: {self.db_socket} exceeds the "
                f"{_SUN_PATH_MAX}-byte unix socket path limit; use a shorter directory"
            )
        self._check_hugepage_dir()
        self._stop_leftovers()
        for directory in (self.rundir, self.dbdir, self.logdir):
            directory.mkdir(parents=True, exist_ok=True)
        try:
            self._start_ovsdb()
            self._configure()
            self.start_vswitchd()
        except BaseException:
            self.stop()
            raise
        log.info(
            "private OVS-DPDK started dir=%s prefix=%s hugepages=%s",
            self.base_dir,
            self.file_prefix,
            self.hugepage_dir or "none",
        )
        return self

    def _check_hugepage_dir(self) -> None:
        if self.hugepage_dir is None:
            return
        if str(self.hugepage_dir) not in _hugetlbfs_mounts():
            raise ValueError(
                f"hugepage_dir {self.hugepage_dir} is not a hugetlbfs mount: mount one with "
                f"'mount -t hugetlbfs -o pagesize=2M nodev {self.hugepage_dir}' and reserve pages "
                "('echo 512 > /proc/sys/vm/nr_hugepages'), or pass hugepage_dir=None"
            )

    def _start_ovsdb(self, fresh: bool = True) -> None:
        conf = self.dbdir / "conf.db"
        if fresh:
            conf.unlink(missing_ok=True)  # no stale dpdk_initialized or ports
            self._run(["ovsdb-tool", "create", str(conf), SCHEMA], timeout=10)
        self.ovsdb_log.unlink(missing_ok=True)
        self._ovsdb = self._spawn(
            [
                "ovsdb-server",
                str(conf),
                f"--remote=punix:{self.db_socket}",
                f"--pidfile={self.rundir / 'ovsdb-server.pid'}",
                f"--unixctl={self.ovsdb_ctl}",
                f"--log-file={self.ovsdb_log}",
                "-vconsole:off",
            ],
            self.logdir / "ovsdb-server.stderr",
        )
        deadline = time.monotonic() + self.start_timeout
        while not _accepts(self.db_socket):
            if self._ovsdb.poll() is not None or time.monotonic() > deadline:
                raise OvsStartError(
                    f"ovsdb-server did not start in {self.base_dir}: "
                    f"{self._ovsdb_failure()}\n{_tail(self.ovsdb_log)}\n"
                    f"{_tail(self.logdir / 'ovsdb-server.stderr')}"
                )
            time.sleep(0.01)

    def _spawn(self, cmd: list[str], stderr_path: Path) -> subprocess.Popen[bytes]:
        # Own session: a Ctrl-C in the caller's terminal must not kill the switch mid-change.
        with open(stderr_path, "wb") as stderr:
            return subprocess.Popen(
                cmd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )

    def _ovsdb_failure(self) -> str:
        assert self._ovsdb is not None
        code = self._ovsdb.poll()
        return f"exited with {code}" if code is not None else "its socket never accepted"

    def _configure(self) -> None:
        extra = ["--no-pci", "--no-telemetry", f"--file-prefix={self.file_prefix}"]
        settings = [
            "other_config:dpdk-init=true",
            f"other_config:dpdk-lcore-mask={self.lcore_mask}",
            f"other_config:pmd-cpu-mask={self.pmd_cpu_mask}",
            "other_config:per-port-memory=true",
            f"other_config:pmd-maxsleep={self.pmd_maxsleep_us}",
        ]
        if self.hugepage_dir is None:
            extra[2:2] = ["--no-huge", "--legacy-mem", "-m", str(self.socket_mem_mb)]
        else:
            settings += [
                f"other_config:dpdk-socket-mem={self.socket_mem_mb}",
                f"other_config:dpdk-hugepage-dir={self.hugepage_dir}",
            ]
        settings.append(f'other_config:dpdk-extra="{" ".join(extra)}"')
        self.vsctl("init", wait=False)
        self.vsctl("set", "Open_vSwitch", ".", *settings, wait=False)

    def start_vswitchd(self) -> None:
        """Start (or restart after ``stop_vswitchd``) ovs-vswitchd-dpdk and wait until ready."""
        if self.vswitchd_alive():
            return
        self.vswitchd_log.unlink(missing_ok=True)
        stderr_path = self.logdir / "ovs-vswitchd.stderr"
        # The netdev datapath creates kernel taps ("ovs-netdev", one per bridge) in its
        # network namespace; a namespace of its own keeps them from colliding with another
        # instance or the host's OVS, and they vanish with the process even after SIGKILL.
        isolate = ["unshare", "--net", "--"] if self.own_netns else []
        if isolate and shutil.which("unshare") is None:
            raise OvsNotInstalled(
                "unshare (util-linux) is missing: install it or pass own_netns=False"
            )
        self._vswitchd = self._spawn(
            [
                *isolate,
                VSWITCHD_DPDK,
                self.db,
                f"--pidfile={self.rundir / 'ovs-vswitchd.pid'}",
                f"--unixctl={self.vswitchd_ctl}",
                f"--log-file={self.vswitchd_log}",
                "-vconsole:off",
            ],
            stderr_path,
        )
        self._wait_vswitchd_ready(stderr_path)

    def _wait_vswitchd_ready(self, stderr_path: Path) -> None:
        """A write that waits for vswitchd (cur_cfg catches next_cfg) proves it runs the config."""
        assert self._vswitchd is not None
        marker = f"external_ids:numanet-private-start={time.time_ns()}"
        timeout = max(1, int(self.start_timeout))
        waiter = subprocess.Popen(
            [
                "ovs-vsctl",
                f"--db={self.db}",
                f"--timeout={timeout}",
                "set",
                "Open_vSwitch",
                ".",
                marker,
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        reason = ""
        try:
            while True:
                if self._vswitchd.poll() is not None:
                    reason = f"ovs-vswitchd-dpdk exited with {self._vswitchd.returncode}"
                    break
                if waiter.poll() is not None:
                    if waiter.returncode != 0:
                        reason = f"it did not apply its configuration: {waiter.stderr.read()}"  # type: ignore[union-attr]
                    break
                time.sleep(0.01)
        finally:
            if waiter.poll() is None:
                waiter.kill()
            waiter.wait()
            if waiter.stderr:
                waiter.stderr.close()
        if not reason and self._dpdk_initialized() != "true":
            reason = "DPDK is not initialised (dpdk_initialized=false)"
        if reason:
            self._kill(self._vswitchd)
            raise OvsStartError(
                f"ovs-vswitchd-dpdk did not start in {self.base_dir}: {reason}\n"
                f"--- {self.vswitchd_log} (tail) ---\n{_tail(self.vswitchd_log)}\n"
                f"--- stderr ---\n{_tail(stderr_path)}"
            )

    def _dpdk_initialized(self) -> str:
        return self.vsctl("get", "Open_vSwitch", ".", "dpdk_initialized", wait=False)

    def stop_vswitchd(self) -> None:
        """Stop only ovs-vswitchd-dpdk (the database and its ports stay)."""
        if self._vswitchd is None:
            return
        if self._vswitchd.poll() is None:
            with contextlib.suppress(RuntimeError):
                self.appctl("vswitchd", "exit", "--cleanup", timeout=5)
        self._reap(self._vswitchd, "ovs-vswitchd-dpdk")
        self._vswitchd = None
        self._remove_dpdk_files()

    def stop_ovsdb(self) -> None:
        """Stop only ovsdb-server (its clients then see the database gone)."""
        if self._ovsdb is None:
            return
        if self._ovsdb.poll() is None:
            with contextlib.suppress(RuntimeError):
                self.appctl("ovsdb", "exit", timeout=5)
        self._reap(self._ovsdb, "ovsdb-server")
        self._ovsdb = None

    def start_ovsdb(self) -> None:
        """Start ovsdb-server again after ``stop_ovsdb``, on the same database (ports kept)."""
        if self.ovsdb_pid is not None:
            return
        self._ovsdb = None
        self._start_ovsdb(fresh=False)

    def stop(self) -> None:
        """Stop both daemons, wait for them, and remove DPDK's runtime and hugepage files."""
        self.stop_vswitchd()
        self.stop_ovsdb()
        self._remove_dpdk_files()
        log.info("private OVS-DPDK stopped dir=%s prefix=%s", self.base_dir, self.file_prefix)

    def _reap(self, proc: subprocess.Popen[bytes], name: str) -> None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("%s pid=%d did not exit; terminating dir=%s", name, proc.pid, self.base_dir)
            self._kill(proc)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _remove_dpdk_files(self) -> None:
        shutil.rmtree(self.dpdk_runtime_dir, ignore_errors=True)
        if self.hugepage_dir is not None and self.hugepage_dir.is_dir():
            # Only with --legacy-mem in dpdk-extra does DPDK keep page files (<prefix>map_<n>);
            # pages stay reserved while those exist.
            for page in self.hugepage_dir.glob(f"{self.file_prefix}map_*"):
                page.unlink(missing_ok=True)

    def _stop_leftovers(self) -> None:
        """Stop daemons a killed earlier run left in this directory (found by their pid files)."""
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pidfile = self.rundir / f"{name}.pid"
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            if _alive(pid) and self._is_ours(pid):
                log.warning("stopping leftover %s pid=%d dir=%s", name, pid, self.base_dir)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                if not _wait_gone(pid, 5):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    _wait_gone(pid, 5)
            pidfile.unlink(missing_ok=True)
        for stale in self.rundir.glob("*") if self.rundir.is_dir() else ():
            if stale.is_socket():
                stale.unlink(missing_ok=True)
        self._remove_dpdk_files()

    def _is_ours(self, pid: int) -> bool:
        """Only a process whose command line names this directory (pids get reused)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return str(self.rundir) + "/" in cmdline
