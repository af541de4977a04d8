"""Where the container's facts live; every path can be moved so tests (and a host-side
caller such as the demo) can build a pod's view in a directory of their own.

Precedence: a flag, then its ``NUMANET_APP_*`` variable, then the path under ``--root``
(``NUMANET_APP_ROOT``), then the path a container has.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# name -> path inside a container
DEFAULTS: dict[str, str] = {
    "podnetinfo": "/etc/podnetinfo",  # downward API, mounted by numanet's webhook
    "slots": "/run/numanet",  # slot directories /run/numanet/<pool>/<deviceID>/
    "devinfo": "/var/run/k8s.cni.cncf.io/devinfo",  # device-info files, when mounted
    "sysfs": "/sys",
    "mounts": "/proc/mounts",
}


@dataclass(frozen=True)
class Roots:
    podnetinfo: Path = Path(DEFAULTS["podnetinfo"])
    slots: Path = Path(DEFAULTS["slots"])
    devinfo: Path = Path(DEFAULTS["devinfo"])
    sysfs: Path = Path(DEFAULTS["sysfs"])
    mounts: Path = Path(DEFAULTS["mounts"])

    @classmethod
    def under(cls, root: str | os.PathLike[str]) -> Roots:
        """Every path below ``root``, as if it were the container's ``/``."""
        base = Path(root)
        return cls(**{k: base / v.lstrip("/") for k, v in DEFAULTS.items()})

    @classmethod
    def resolve(cls, flags: Mapping[str, str | None],
                env: Mapping[str, str] | None = None) -> Roots:
        """Roots from flags (``root`` and one per path, None when not given) and the
        environment."""
        env = os.environ if env is None else env
        root = flags.get("root") or env.get("NUMANET_APP_ROOT")
        base = cls.under(root) if root else cls()
        chosen = {}
        for name in DEFAULTS:
            value = flags.get(name) or env.get(f"NUMANET_APP_{name.upper()}")
            chosen[name] = Path(value) if value else getattr(base, name)
        return cls(**chosen)
