"""The numanet network configuration (stdin of a CNI call), parsed and validated.

CNI spec 1.1.0; configs from 0.3.0 on are accepted. The types of the keys numanet uses
are strict (``"mtu": "9000"`` is an error, not 9000). Keys it does not use are ignored,
as the reference plugins ignore them: callers add their own (Multus puts ``pciBusID``
beside ``deviceID`` for every device plugin resource). Each is logged once per network
at debug, so a mistyped key can still be found.

Hostile input is refused here, before anything is written: a config over
``MAX_CONFIG_BYTES`` or nested deeper than ``MAX_DEPTH`` is a decode failure (6), and
``ipam.dataDir`` (handed to host-local, which creates it as root) must be an absolute,
normalised path (``check_path``): a relative one would resolve against the agent's working
directory, not the runtime's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from cni import errors
from cni.errors import CniError
from cni.mac import MAC
from deviceplugin import naming

log = logging.getLogger(__name__)

PLUGIN_TYPE = "numanet"
SPEC_VERSION = "1.1.0"
# Kept equal to cni.shim.SUPPORTED_VERSIONS (the shim cannot import this module).
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
# Kept equal to cni.shim.MAX_STDIN_BYTES.
MAX_CONFIG_BYTES = 1 << 20
# Real configs nest 4 or 5 levels (ipam.ranges[][], prevResult.ips[]); a deeper one is an
# attack on the parser or on whatever walks the document after it.
MAX_DEPTH = 64
# Linux's PATH_MAX and NAME_MAX, in bytes.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255

_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}$")
_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_BRIDGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,14}$")
_PLUGIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

_KNOWN_KEYS = frozenset({
    # spec
    "cniVersion", "cniVersions", "name", "type", "ipam", "dns", "args", "capabilities",
    "runtimeConfig", "prevResult", "disableCheck", "disableGC",
    # numanet
    "pool", "resourceName", "bridge", "mtu", "vlan", "deviceID",
})
_RUNTIME_KEYS = {"deviceID": str, "CNIDeviceInfoFile": str, "mac": str}


@dataclass(frozen=True)
class Attachment:
    """One (container ID, interface) pair from GC's list of attachments that stay."""

    container_id: str
    ifname: str


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    ipam_type: str | None = None
    pool: str | None = None
    resource_name: str | None = None
    bridge: str | None = None
    mtu: int | None = None
    vlan: int | None = None
    device_id: str | None = None  # not yet checked against naming.validate_device_id
    device_info_file: str | None = None
    mac: str | None = None  # runtimeConfig.mac (the "mac" capability)
    prev_result: dict[str, Any] | None = None
    dns: dict[str, Any] | None = None
    valid_attachments: tuple[Attachment, ...] | None = None  # GC only
    raw: dict[str, Any] = field(default_factory=dict)  # the whole document, for IPAM


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _bad(msg: str, details: str) -> CniError:
    return CniError(errors.INVALID_NETWORK_CONFIG, msg, details)


def _typed(doc: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    value = doc.get(key)
    if value is None:
        return None
    # bool is an int in Python; "mtu": true must not pass as 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"{where}{key} must be {_TYPE_NAMES[kind]}, not {type(value).__name__} "
                   f"{json.dumps(value)[:60]}",
                   f"write {key} as {_TYPE_NAMES[kind]} in the network configuration")
    return value


_TYPE_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "a list",
               bool: "true or false"}


def read_document(stdin: bytes) -> dict[str, Any] | CniError:
    """The config document, or the CniError decoding it gave: a call's stdin is decoded
    once, and the error is raised where a verb needs the config."""
    try:
        return decode(stdin)
    except CniError as exc:
        return exc


def version_of(document: dict[str, Any] | CniError) -> str:
    """The cniVersion to answer in, from a config that may be broken: best effort."""
    version = document.get("cniVersion") if isinstance(document, dict) else None
    return version if isinstance(version, str) and version in SUPPORTED_VERSIONS \
        else SPEC_VERSION


def decode(stdin: bytes) -> dict[str, Any]:
    if len(stdin) > MAX_CONFIG_BYTES:
        raise CniError(errors.DECODE_FAILURE, f"network configuration is {len(stdin)} bytes",
                       f"keep it under {MAX_CONFIG_BYTES} bytes")
    try:
        doc = json.loads(stdin)
    except UnicodeDecodeError as exc:
        raise CniError(errors.DECODE_FAILURE, "network configuration is not UTF-8 text",
                       str(exc)) from None
    except ValueError as exc:
        raise CniError(errors.DECODE_FAILURE, "network configuration on stdin is not valid JSON",
                       f"{exc}; the runtime passes the plugin's JSON config on stdin") from None
    except RecursionError:
        raise _too_deep() from None
    if not isinstance(doc, dict):
        raise CniError(errors.DECODE_FAILURE, "network configuration is not a JSON object",
                       f"got {type(doc).__name__}; pass one JSON object on stdin")
    if _deeper_than(doc, MAX_DEPTH):
        raise _too_deep()
    return doc


def _too_deep() -> CniError:
    return CniError(errors.DECODE_FAILURE,
                    f"network configuration is nested deeper than {MAX_DEPTH} levels",
                    "a CNI network configuration nests a few levels; pass the plugin's config")


def _deeper_than(doc: Any, limit: int) -> bool:
    """Whether objects and lists nest deeper than ``limit`` (without recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def check_path(value: str, key: str) -> str:
    """A path from the network config that numanet or its IPAM plugin writes under as
    root: absolute, normalised (no '.', '..' or empty component; a trailing '/' is
    fine), UTF-8 without NUL, within Linux's length limits. CniError 7 naming ``key``."""
    problem = path_problem(value)
    if problem:
        raise _bad(f"{key} {value[:120]!r} {problem}",
                   "give an absolute, normalised path: a relative one would resolve against "
                   "the numanet agent's working directory, not the runtime's")
    return value


def path_problem(value: str) -> str | None:
    """What makes ``value`` unfit to name a file numanet writes as root (``check_path``),
    as words following the path in a message; None when it is fit."""
    try:
        encoded = value.encode()
    except UnicodeEncodeError:
        return "is not UTF-8 text"
    parts = value.split("/")
    if "\0" in value:
        return "holds a NUL byte"
    if not value.startswith("/"):
        return "is not an absolute path"
    if len(encoded) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    if any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
        return f"has a name longer than {MAX_NAME_BYTES} bytes"
    if ".." in parts:
        return "climbs out with '..'"
    if os.path.normpath(value) != (value.rstrip("/") or "/"):
        return f"is not normalised (write {os.path.normpath(value)!r})"
    return None


def _version(doc: dict[str, Any], command: str) -> str:
    version = _typed(doc, "cniVersion", str)
    if version is None:
        raise _bad("cniVersion is missing", f"add \"cniVersion\": \"{SPEC_VERSION}\"")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(errors.INCOMPATIBLE_VERSION, f"cniVersion {version[:20]!r} is not supported",
                       f"numanet supports {', '.join(SUPPORTED_VERSIONS)}")
    needs = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}.get(command)
    if needs and version_tuple(version) < version_tuple(needs):
        raise CniError(errors.INCOMPATIBLE_VERSION,
                       f"{command} needs cniVersion {needs} or later, the config says {version}",
                       f"raise cniVersion to {SPEC_VERSION}")
    return version


def _attachments(doc: dict[str, Any]) -> tuple[Attachment, ...] | None:
    # libcni sends both names (an early 1.1 draft used cni.dev/attachments).
    items = doc.get("cni.dev/valid-attachments", doc.get("cni.dev/attachments"))
    if items is None:
        return None
    if not isinstance(items, list):
        raise _bad("cni.dev/valid-attachments must be a list",
                   "list objects {\"containerID\": ..., \"ifname\": ...}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str) \
                or not isinstance(item.get("ifname"), str):
            raise _bad(f"cni.dev/valid-attachments[{i}] is not {{containerID, ifname}}",
                       "each attachment is an object with string containerID and ifname")
        out.append(Attachment(item["containerID"], item["ifname"]))
    return tuple(out)


def _runtime_config(doc: dict[str, Any]) -> dict[str, str]:
    runtime = _typed(doc, "runtimeConfig", dict) or {}
    out = {}
    for key, kind in _RUNTIME_KEYS.items():
        value = _typed(runtime, key, kind, "runtimeConfig.")
        if value is not None:
            out[key] = value
    return out


class _IgnoredKeys:
    """(network, key) pairs already logged as ignored; bounded, since networks come and go."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def first_time(self, network: str, key: str) -> bool:
        with self._lock:
            if (network, key) in self._seen:
                return False
            if len(self._seen) >= self.LIMIT:
                self._seen.clear()
            self._seen.add((network, key))
            return True


_IGNORED = _IgnoredKeys()


def ignored_keys(doc: dict[str, Any]) -> list[str]:
    """Top-level keys numanet does not use (``cni.dev/...`` conventions are read elsewhere)."""
    return sorted(k for k in doc if k not in _KNOWN_KEYS and "/" not in k)


def _log_ignored(doc: dict[str, Any], network: str) -> None:
    for key in ignored_keys(doc):
        if _IGNORED.first_time(network, key):
            log.debug("network config field ignored network=%s field=%s value=%s", network,
                      key[:64], json.dumps(doc[key])[:64])


def parse_netconf(config: bytes | dict[str, Any], command: str) -> NetConf:
    """Validate a numanet network configuration (stdin, or the document already decoded
    from it); raises CniError with the spec's code."""
    doc = decode(config) if isinstance(config, bytes) else config
    version = _version(doc, command)
    name = _typed(doc, "name", str)
    if not name or not _NETWORK_NAME.fullmatch(name):
        raise _bad(f"name {name!r} is missing or not a valid network name",
                   "start with a letter or digit; use letters, digits, '_', '.', '-'")
    plugin_type = _typed(doc, "type", str)
    if plugin_type != PLUGIN_TYPE:
        raise _bad(f"type is {plugin_type!r}, this plugin is {PLUGIN_TYPE!r}",
                   f"set \"type\": \"{PLUGIN_TYPE}\" or call the plugin the config names")
    _log_ignored(doc, name)
    versions = _typed(doc, "cniVersions", list)
    if versions is not None and not all(isinstance(v, str) for v in versions):
        raise _bad("cniVersions must be a list of strings", "e.g. [\"1.0.0\", \"1.1.0\"]")
    for key in ("args", "capabilities", "dns"):
        _typed(doc, key, dict)
    for key in ("disableCheck", "disableGC"):
        _typed(doc, key, bool)

    ipam = _typed(doc, "ipam", dict)
    ipam_type = None
    if ipam:
        ipam_type = _typed(ipam, "type", str, "ipam.")
        if not ipam_type or not _PLUGIN_NAME.fullmatch(ipam_type):
            raise _bad(f"ipam.type {ipam_type!r} is missing or not a plugin name",
                       "name an IPAM plugin found in CNI_PATH, e.g. \"host-local\"")
        data_dir = _typed(ipam, "dataDir", str, "ipam.")
        if data_dir:  # "" is host-local's default, as when it is left out
            check_path(data_dir, "ipam.dataDir")

    pool = _typed(doc, "pool", str)
    if pool is not None and not naming.is_dns_label(pool):
        raise _bad(f"pool {pool[:80]!r} is not a pool name", "pool names are DNS labels")
    resource_name = _typed(doc, "resourceName", str)
    if resource_name is not None and not _RESOURCE.fullmatch(resource_name):
        raise _bad(f"resourceName {resource_name[:80]!r} is not <prefix>/<pool>",
                   "e.g. numanet.io/vhostuser-ovs")
    bridge = _typed(doc, "bridge", str)
    if bridge is not None and not _BRIDGE.fullmatch(bridge):
        raise _bad(f"bridge {bridge[:80]!r} is not a bridge name",
                   "1 to 15 letters, digits, '_', '.', '-'")
    mtu = _typed(doc, "mtu", int)
    if mtu is not None and not 68 <= mtu <= 65535:
        raise _bad(f"mtu {mtu} is out of range", "use 68 to 65535")
    vlan = _typed(doc, "vlan", int)
    if vlan is not None and not 1 <= vlan <= 4094:
        raise _bad(f"vlan {vlan} is out of range", "use a VLAN ID from 1 to 4094, or omit vlan")

    runtime = _runtime_config(doc)
    top_device = _typed(doc, "deviceID", str)
    runtime_device = runtime.get("deviceID")
    if top_device and runtime_device and top_device != runtime_device:
        raise _bad(f"deviceID {top_device!r} and runtimeConfig.deviceID {runtime_device!r} differ",
                   "pass one device ID (Multus sets it from the pod's allocated resource)")
    mac = runtime.get("mac")
    if mac is not None and not MAC.fullmatch(mac):
        raise _bad(f"runtimeConfig.mac {mac[:40]!r} is not a MAC address",
                   "write it as six hex pairs, e.g. 02:00:00:00:00:01")
    prev = _typed(doc, "prevResult", dict)
    return NetConf(
        cni_version=version,
        name=name,
        ipam_type=ipam_type,
        pool=pool,
        resource_name=resource_name,
        bridge=bridge,
        mtu=mtu,
        vlan=vlan,
        device_id=top_device or runtime_device,
        device_info_file=runtime.get("CNIDeviceInfoFile"),
        mac=mac,
        prev_result=prev,
        dns=doc.get("dns"),
        valid_attachments=_attachments(doc),
        raw=doc,
    )
