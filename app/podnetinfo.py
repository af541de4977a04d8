"""The downward-API files numanet's webhook mounts at ``/etc/podnetinfo``.

``annotations`` holds one ``key="value"`` line per annotation, the value quoted as Go's
``%q`` does (the kubelet writes it so); Multus's ``k8s.v1.cni.cncf.io/network-status``
is one of them. ``hugepages_<2M|1G>_<request|limit>_<container>`` hold the container's
hugepages in MiB. Missing files are normal (no webhook): they read as empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import AppError

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
OLD_NETWORK_STATUS = "k8s.v1.cni.cncf.io/networks-status"  # Multus before v3.6
PAGE_NAMES = {"2M": 2048, "1G": 1048576}  # file name part -> page size in KiB

_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11,
            "\\": 92, '"': 34, "'": 39}


def go_unquote(quoted: str) -> str:
    """Undo Go's strconv.Quote: ``\\n``, ``\\"``, ``\\xHH`` bytes, ``\\uXXXX`` ..."""
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
        raise ValueError("not a double-quoted string")
    body, out, i = quoted[1:-1], bytearray(), 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out += char.encode()
            i += 1
            continue
        kind = body[i + 1:i + 2]
        if kind in _ESCAPES:
            out.append(_ESCAPES[kind])
            i += 2
        elif kind in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[kind]
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width:
                raise ValueError(f"short \\{kind} escape")
            code = int(digits, 16)
            out += bytes([code]) if kind == "x" else chr(code).encode()
            i += 2 + width
        elif kind.isdigit():  # octal \ooo
            out.append(int(body[i + 1:i + 4], 8))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{kind}")
    return out.decode("utf-8", errors="replace")


def read_downward_file(path: Path) -> dict[str, str]:
    """``key="value"`` lines (labels, annotations); {} when the file is absent."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AppError(f"cannot read {path}: {exc.strerror}",
                       "check the podnetinfo volume the webhook mounts") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, quoted = line.partition("=")
        try:
            if not sep:
                raise ValueError("no '='")
            values[key] = go_unquote(quoted)
        except ValueError as exc:
            raise AppError(f"{path} line {number} is not key=\"value\" ({exc})",
                           "the kubelet writes downward-API files so; was it edited?") from None
    return values


@dataclass(frozen=True)
class StatusEntry:
    """One attachment of Multus's network-status, in its order."""

    index: int
    name: str | None
    interface: str | None
    ips: tuple[str, ...]
    mac: str | None
    mtu: int | None
    device_info: dict[str, Any] | None


def network_status(annotations: dict[str, str], where: str) -> list[StatusEntry]:
    """The attachments in the network-status annotation; [] when there is none."""
    raw = annotations.get(NETWORK_STATUS, annotations.get(OLD_NETWORK_STATUS))
    if raw is None:
        return []
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise AppError(f"{where}: {NETWORK_STATUS} is not JSON ({exc})",
                       "Multus writes it; check the pod's annotations") from None
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise AppError(f"{where}: {NETWORK_STATUS} is not a list of objects",
                       "Multus writes it; check the pod's annotations")
    entries = []
    for index, item in enumerate(doc):
        ips = item.get("ips")
        info = item.get("device-info")
        mtu = item.get("mtu")
        entries.append(StatusEntry(
            index=index,
            name=_str(item.get("name")),
            interface=_str(item.get("interface")),
            ips=tuple(ip for ip in ips if isinstance(ip, str)) if isinstance(ips, list) else (),
            mac=_str(item.get("mac")),
            mtu=mtu if isinstance(mtu, int) and not isinstance(mtu, bool) else None,
            device_info=info if isinstance(info, dict) else None))
    return entries


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def hugepage_budget(podnetinfo: Path, container: str | None) -> tuple[str | None, dict[int, int]]:
    """(container name, page size KiB -> MiB it may use) from the hugepages files.

    Without ``CONTAINER_NAME`` the files of the only container that has any are taken;
    with files of several containers and no name nothing is known (an empty dict)."""
    found: dict[str, dict[int, int]] = {}
    try:
        names = sorted(p.name for p in podnetinfo.iterdir())
    except OSError:
        return container, {}
    for name in names:
        parts = name.split("_", 3)
        if len(parts) != 4 or parts[0] != "hugepages" or parts[1] not in PAGE_NAMES:
            continue
        if parts[2] not in ("request", "limit"):
            continue
        try:
            mib = int((podnetinfo / name).read_text().strip())
        except (OSError, ValueError):
            continue
        sizes = found.setdefault(parts[3], {})
        page = PAGE_NAMES[parts[1]]
        # Kubernetes makes hugepage requests equal limits; the smaller is what is safe.
        sizes[page] = min(mib, sizes.get(page, mib))
    if container is None and len(found) == 1:
        container = next(iter(found))
    return container, found.get(container, {}) if container else {}
