"""Which claims this node prepared, kept on disk so that an agent restart still knows.

One small JSON file per claim under ``<run-dir>/dra/claims/<claimUID>.json``, written
atomically once a claim is prepared and removed once it is unprepared: a Prepare the
kubelet repeats (after its own restart, or a lost answer) answers from it, an Unprepare
of a claim it does not hold succeeds at once.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deviceplugin.fileio import load_json_files, write_atomic

log = logging.getLogger(__name__)

_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class PreparedDevice:
    request: str
    pool: str
    dra_pool: str
    device_name: str
    device_id: str
    cdi_device_ids: tuple[str, ...]


@dataclass(frozen=True)
class PreparedClaim:
    uid: str
    namespace: str
    name: str
    devices: tuple[PreparedDevice, ...]
    cdi_spec: str | None  # the claim's CDI spec file, None when it has no numanet device


def _parse(data: Any) -> PreparedClaim:
    devices = tuple(PreparedDevice(**{**d, "cdi_device_ids": tuple(d["cdi_device_ids"])})
                    for d in data.pop("devices"))
    return PreparedClaim(devices=devices, **data)


class ClaimCheckpoint:
    """Thread safe; the in-memory view is the source for readers, the files for restarts."""

    def __init__(self, run_dir: Path) -> None:
        self.directory = Path(run_dir) / "dra" / "claims"
        self._lock = threading.Lock()
        self._claims: dict[str, PreparedClaim] = {}
        self._holders: dict[str, str] = {}  # device ID -> claim UID

    def load(self) -> dict[str, PreparedClaim]:
        claims = load_json_files(self.directory, _parse, lambda c: c.uid, "prepared claim")
        with self._lock:
            self._claims = claims
            self._holders = {d.device_id: c.uid for c in claims.values() for d in c.devices}
        return dict(claims)

    def save(self, claim: PreparedClaim) -> None:
        if not _UID.fullmatch(claim.uid):
            raise ValueError(f"claim UID {claim.uid!r} is not a Kubernetes UID")
        write_atomic(self.directory / f"{claim.uid}.json",
                     json.dumps(asdict(claim)).encode(), mode=0o600, dir_mode=0o700)
        with self._lock:
            self._claims[claim.uid] = claim
            self._holders.update((d.device_id, claim.uid) for d in claim.devices)

    def remove(self, uid: str) -> None:
        with self._lock:
            if uid not in self._claims:
                return
            (self.directory / f"{uid}.json").unlink(missing_ok=True)
            for device in self._claims.pop(uid).devices:
                if self._holders.get(device.device_id) == uid:
                    del self._holders[device.device_id]

    def get(self, uid: str) -> PreparedClaim | None:
        with self._lock:
            return self._claims.get(uid)

    def all(self) -> dict[str, PreparedClaim]:
        with self._lock:
            return dict(self._claims)

    def holder(self, device_id: str) -> PreparedClaim | None:
        """The prepared claim that holds ``device_id``, if any."""
        with self._lock:
            uid = self._holders.get(device_id)
            return self._claims.get(uid) if uid is not None else None
