"""The agent's own note of each attachment: which container holds which device ID.

One small JSON file per device ID in ``<run-dir>/cni/`` (root only, never mounted into a
container, so a pod cannot forge it). It is written *before* anything is plugged, which
lets DEL, GC and an ADD that failed half way find and undo every step, and lets ADD
refuse a device that another attachment still holds. The vSwitch port tags stay the
truth about ports; this file adds what tags cannot carry (network name, IPAM config,
device-info path).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deviceplugin import naming
from deviceplugin.fileio import write_atomic
from vswitch.api import Owner

log = logging.getLogger(__name__)

RECORDS_DIR = "cni"


def describe(device_id: str | None, pod: str, container_id: str, ifname: str) -> str:
    """The key=value words that name one attachment in every log line and error about it."""
    return f"device_id={device_id or '-'} pod={pod} container={container_id[:12]} ifname={ifname}"


@dataclass(frozen=True)
class AttachmentRecord:
    device_id: str
    network: str
    container_id: str
    ifname: str
    pod_namespace: str = ""
    pod_name: str = ""
    netns: str = ""
    cni_path: tuple[str, ...] = ()
    cni_args: str = ""
    state: str = "adding"  # adding | added
    mac: str | None = None
    device_info_file: str | None = None
    # memif mode ip: the vSwitch side's address (CIDR) the ADD gave it, so that a replay or
    # an adoption plugs the port again with the same one, never a new guess.
    vswitch_address: str | None = None
    # The network config of the ADD (without prevResult): releases the IPAM lease on GC
    # or cleanup even when the caller no longer sends a config.
    netconf: dict[str, Any] = field(default_factory=dict)

    @property
    def owner(self) -> Owner:
        """Whose port this is, as the vSwitch tags it."""
        return Owner(self.pod_namespace, self.pod_name, self.container_id, self.ifname)

    @property
    def pod(self) -> str:
        return self.owner.pod

    @property
    def what(self) -> str:
        return describe(self.device_id, self.pod, self.container_id, self.ifname)

    def same_attachment(self, container_id: str, ifname: str) -> bool:
        return self.container_id == container_id and self.ifname == ifname


class RecordStore:
    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / RECORDS_DIR

    def path(self, device_id: str) -> Path:
        return self.dir / f"{naming.validate_device_id(device_id)}.json"

    def get(self, device_id: str) -> AttachmentRecord | None:
        try:
            doc = json.loads(self.path(device_id).read_bytes())
            doc["cni_path"] = tuple(doc.get("cni_path") or ())
            return AttachmentRecord(**doc)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            # A torn or foreign file must not block the device forever: treat it as absent
            # and say so; the port tags still protect a live attachment.
            log.warning("unreadable attachment record device_id=%s error=%s", device_id, exc)
            return None

    def put(self, record: AttachmentRecord) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.path(record.device_id), json.dumps(asdict(record)).encode(), mode=0o600)

    def delete(self, device_id: str) -> None:
        try:
            os.unlink(self.path(device_id))
        except FileNotFoundError:
            pass

    def all(self) -> list[AttachmentRecord]:
        out: list[AttachmentRecord] = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return out
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                record = self.get(name[:-len(".json")])
            except naming.InvalidName:
                continue
            if record is not None:
                out.append(record)
        return out

    def find(self, container_id: str, ifname: str) -> AttachmentRecord | None:
        return next((r for r in self.all() if r.same_attachment(container_id, ifname)), None)
