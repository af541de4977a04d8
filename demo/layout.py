"""Every path and name one demo run uses, derived from its private directory.

All of a run lives under one directory (default ``/run/numanet-demo``), kept short
because the deepest unix socket (a slot's ``sock``) must stay under 107 bytes. Names
that cannot live in it (network namespaces, DPDK file prefixes) carry a tag hashed
from the directory, so two demos in different directories never collide and a killed
run's leftovers are found again by the next run in the same directory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from demo.testpmd import DPDK_RUNTIME_DIR
from deviceplugin import naming

DEFAULT_DIR = Path("/run/numanet-demo")
SUN_PATH_MAX = 107
POD_NAMESPACE = "demo"
POD_NAMES = ("pod-a", "pod-b")
# The longest device ID the demo config can produce: <pool>-n<999>-<index>.
_LONGEST_DEVICE_ID = len(naming.slot_device_id("vhostuser-ovs", 999, 999))


@dataclass(frozen=True)
class Layout:
    base: Path

    @property
    def tag(self) -> str:
        return hashlib.sha256(str(self.base).encode()).hexdigest()[:6]

    # --- inside the private directory ---
    @property
    def journal(self) -> Path:
        return self.base / "journal.json"

    @property
    def ovs_dir(self) -> Path:
        return self.base / "ovs"

    @property
    def hugepage_dir(self) -> Path:
        return self.base / "huge"

    @property
    def kubelet_dir(self) -> Path:
        return self.base / "k"

    @property
    def plugin_dir(self) -> Path:
        return self.kubelet_dir / "device-plugins"

    @property
    def pod_resources_socket(self) -> Path:
        return self.kubelet_dir / "pod-resources" / "kubelet.sock"

    @property
    def run_dir(self) -> Path:
        return self.base / "r"

    @property
    def cni_socket(self) -> Path:
        return naming.cni_socket(self.run_dir)

    @property
    def devinfo_dir(self) -> Path:
        """The device plugin's device-info directory (Multus: devinfo/dp)."""
        return self.base / "devinfo" / "dp"

    @property
    def cni_devinfo_dir(self) -> Path:
        """Where the demo, playing Multus, asks the CNI to write (Multus: devinfo/cni)."""
        return self.base / "devinfo" / "cni"

    @property
    def ipam_dir(self) -> Path:
        return self.base / "ipam"

    @property
    def config(self) -> Path:
        return self.base / "config.yaml"

    @property
    def log_dir(self) -> Path:
        return self.base / "log"

    # --- outside it, tagged ---
    def netns(self, pod: str) -> str:
        return f"nnd-{self.tag}-{pod}"

    def testpmd_prefix(self, pod: str) -> str:
        return f"nnd-{self.tag}-{pod}"

    def dpdk_runtime_dirs(self) -> list[Path]:
        """DPDK's runtime directories of the demo's testpmds (OVS has its own prefix)."""
        return [DPDK_RUNTIME_DIR / self.testpmd_prefix(pod) for pod in POD_NAMES]

    def longest_socket_path(self) -> int:
        return len(str(self.run_dir / "s")) + 1 + _LONGEST_DEVICE_ID + 1 + len(naming.SOCKET_NAME)

    def check(self) -> None:
        """Refuse a directory whose sockets would not fit in a unix socket address."""
        if not self.base.is_absolute():
            raise ValueError(f"--dir {self.base} must be an absolute path")
        if self.base in (Path("/"), Path("/run"), Path("/tmp"), Path("/var/run")):
            raise ValueError(f"--dir {self.base} is a system directory; the demo removes its "
                             "directory at the end: name a directory of its own")
        longest = max(self.longest_socket_path(), len(str(self.ovs_dir / "run" / "db.sock")))
        if longest > SUN_PATH_MAX:
            raise ValueError(f"--dir {self.base} is too long: slot sockets under it would take "
                             f"{longest} bytes, over the {SUN_PATH_MAX}-byte unix socket "
                             f"limit; use a shorter directory such as {DEFAULT_DIR}")
