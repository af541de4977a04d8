"""``dpdk-testpmd`` as the container side of a slot: virtio_user (vhost-user) or memif.

Runs interactively (``-i``) through a pipe so a test can start forwarding, read counters
and stop; always without PCI and hugepages, with its own ``--file-prefix``::

    with TestPmd([virtio_user(0, sock_a, server=True), virtio_user(1, sock_b, server=True)]) as pmd:
        pmd.wait_link_up()
        pmd.start(tx_first=16)
        time.sleep(2)
        stats = pmd.stop()          # {port: ForwardStats(rx, tx, rx_dropped, tx_dropped)}

The process itself is driven by the product's runner, ``demo.testpmd``
(the one ``numanet demo`` uses for its pods), so tests and the demo share one way of
talking to testpmd; this module only adds the multi-port, test-shaped API.

Needs the Debian package dpdk-dev; ``require_testpmd()`` skips the test otherwise.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

import pytest

from demo.testpmd import PROMPT, Testpmd, TestpmdError, line_buffered

TESTPMD = "dpdk-testpmd"
INSTALL_HINT = "apt-get install -y --no-install-recommends dpdk-dev"
TestPmdError = TestpmdError
_prefixes = itertools.count()

_FORWARD_BLOCK = re.compile(
    r"Forward statistics for port (\d+)\s+-+\s+"
    r"RX-packets:\s+(\d+)\s+RX-dropped:\s+(\d+)\s+RX-total:\s+\d+\s+"
    r"TX-packets:\s+(\d+)\s+TX-dropped:\s+(\d+)"
)

__all__ = ["PROMPT", "ForwardStats", "TestPmd", "TestPmdError", "in_container_mounts", "memif",
           "require_testpmd", "virtio_user"]


def require_testpmd() -> str:
    path = shutil.which(TESTPMD)
    if path is None:
        pytest.skip(f"{TESTPMD} is not installed: {INSTALL_HINT}")
    return path


def virtio_user(
    index: int, path: str | os.PathLike[str], *, server: bool, queue_size: int = 256
) -> str:
    """A virtio_user vdev: ``server=True`` creates the vhost-user socket (OVS connects)."""
    return f"virtio_user{index},path={path},server={int(server)},queues=1,queue_size={queue_size}"


def memif(index: int, path: str | os.PathLike[str], *, role: str, memif_id: int = 0) -> str:
    """A net_memif vdev; ``role`` is DPDK's: "server" creates the socket, "client" connects."""
    return f"net_memif{index},role={role},id={memif_id},socket={path},socket-abstract=no"


def in_container_mounts(cmd: list[str], mounts: Mapping[str, str]) -> list[str]:
    """``cmd`` run in a private mount namespace with ``host dir -> container dir`` binds,
    so it finds each slot where the container does (``/run/numanet/<pool>/<deviceID>``).

    A fresh tmpfs on /run keeps the container paths (and DPDK's runtime files) out of the
    host, as a container's own /run would.
    """
    script = ["mount --make-rprivate /", "mount -t tmpfs numanet-test /run"]
    for host, container in mounts.items():
        script += [f"mkdir -p {shlex.quote(container)}",
                   f"mount --bind {shlex.quote(host)} {shlex.quote(container)}"]
    script.append('exec "$@"')
    return ["unshare", "--mount", "sh", "-c", "; ".join(script), "sh", *cmd]


@dataclass(frozen=True)
class ForwardStats:
    rx: int
    tx: int
    rx_dropped: int = 0
    tx_dropped: int = 0


class TestPmd:
    """One interactive dpdk-testpmd process; a context manager that always cleans up.

    ``cmd`` may be changed (wrapped in ``unshare`` ...) before ``launch``.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        vdevs: list[str],
        *,
        forward_cpu: int | None = None,
        main_cpu: int | None = None,
        memory_mb: int = 512,
        forward_mode: str = "io",
        total_mbufs: int = 8192,
        extra_args: tuple[str, ...] = (),
        file_prefix: str | None = None,
    ) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        # Forward on the first CPU, main lcore on the second: the private OVS polls on the
        # second (its default pmd-cpu-mask), and the main lcore only sleeps in the prompt.
        self.forward_cpu = cpus[0] if forward_cpu is None else forward_cpu
        self.main_cpu = (cpus[1] if len(cpus) > 1 else cpus[0]) if main_cpu is None else main_cpu
        self.file_prefix = file_prefix or f"nntp-{os.getpid()}-{next(_prefixes)}"
        lcores = sorted({self.forward_cpu, self.main_cpu})
        self.cmd = line_buffered([
            TESTPMD,
            "-l", ",".join(map(str, lcores)),
            "--main-lcore", str(self.main_cpu),
            "--no-pci", "--no-huge", "-m", str(memory_mb),
            f"--file-prefix={self.file_prefix}",
            *[f"--vdev={vdev}" for vdev in vdevs],
            "--",
            "-i",
            f"--total-num-mbufs={total_mbufs}",
            f"--forward-mode={forward_mode}",
            *extra_args,
        ])
        self.ports = len(vdevs)
        self._runner: Testpmd | None = None
        self.started_at: float | None = None

    # -- process ---------------------------------------------------------------------------

    def __enter__(self) -> TestPmd:
        self.launch()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def launch(self, timeout: float = 30.0) -> None:
        require_testpmd()
        self._runner = Testpmd(self.cmd, self.file_prefix)
        self._runner.launch()
        try:
            self._runner.wait_ready(timeout)
        except BaseException:
            self.close()  # __exit__ does not run when __enter__ fails
            raise

    @property
    def output(self) -> str:
        return self._runner.output if self._runner else ""

    def command(self, line: str, timeout: float = 15.0) -> str:
        """Send one command line; returns what testpmd printed before the next prompt."""
        assert self._runner is not None, "launch() first"
        return self._runner.command(line, timeout)

    def close(self) -> None:
        """Quit testpmd (kill it if it does not), then remove its DPDK runtime directory."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

    # -- forwarding ------------------------------------------------------------------------

    def link_up(self, port: int) -> bool:
        assert self._runner is not None, "launch() first"
        return self._runner.link_up(port)

    def wait_link_up(self, timeout: float = 15.0) -> float:
        """Wait until every port's link is up; returns the seconds it took."""
        start = time.monotonic()
        while not all(self.link_up(p) for p in range(self.ports)):
            if time.monotonic() - start > timeout:
                raise TestPmdError(f"testpmd links not up within {timeout} s")
            time.sleep(0.1)
        return time.monotonic() - start

    def start(self, tx_first: int | None = None) -> None:
        """Start forwarding; ``tx_first`` bursts are sent first (io mode only forwards)."""
        line = "start" if tx_first is None else f"start tx_first {tx_first}"
        self.command(line)
        self.started_at = time.monotonic()

    def stop(self) -> dict[int, ForwardStats]:
        """Stop forwarding; per-port counters of the run, from testpmd's summary."""
        text = self.command("stop")
        stats = {
            int(m[1]): ForwardStats(
                rx=int(m[2]), rx_dropped=int(m[3]), tx=int(m[4]), tx_dropped=int(m[5])
            )
            for m in _FORWARD_BLOCK.finditer(text)
        }
        if len(stats) != self.ports:
            raise TestPmdError(f"could not parse forward statistics from:\n{text}")
        return stats
