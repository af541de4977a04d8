"""One CNI call as the agent receives it from the shim: the CNI_* environment and stdin.

``parse_request`` validates the environment for the command (the spec's required
variables, container ID and interface name syntax, CNI_PATH entries, and every
CNI_ARGS value) before anything else looks at it. Pod names and namespaces from
CNI_ARGS end up in vSwitch tags, file contents and kubelet queries, so they are held to
the Kubernetes name rules here, once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cni import errors
from cni.errors import CniError
from cni.mac import MAC
from cni.netconf import read_document

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
# Variables the spec requires per command (CNI_COMMAND itself is always required).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "STATUS": (),
    "GC": ("CNI_PATH",),
    "VERSION": (),
}
ENV_NAMES = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}$")
_ARG_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_POD_UID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_MAX_ARGS = 4096
_MAX_PATH = 4096


@dataclass(frozen=True)
class CniArgs:
    """CNI_ARGS after validation; ``raw`` is passed on unchanged to the IPAM plugin."""

    raw: str = ""
    pod_namespace: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    infra_container_id: str | None = None
    mac: str | None = None
    ips: tuple[str, ...] = ()
    ignore_unknown: bool = False
    unknown: tuple[str, ...] = ()

    @property
    def pod(self) -> str:
        """``namespace/name`` for log lines and messages, ``-`` when the runtime gave none."""
        if self.pod_namespace and self.pod_name:
            return f"{self.pod_namespace}/{self.pod_name}"
        return "-"


@dataclass(frozen=True)
class CniRequest:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: CniArgs = field(default_factory=CniArgs)
    path: tuple[str, ...] = ()
    stdin: bytes = b""
    # stdin decoded once for the whole call (netconf.read_document); None: not yet.
    document: dict[str, Any] | CniError | None = field(default=None, compare=False, repr=False)

    def config(self) -> dict[str, Any]:
        """The network config document; raises the CniError that decoding stdin gave."""
        document = self.document if self.document is not None else read_document(self.stdin)
        if isinstance(document, CniError):
            raise document
        return document

    def env(self) -> dict[str, str]:
        """The CNI environment to hand to a delegated plugin (same values, spec order)."""
        return {
            "CNI_COMMAND": self.command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns,
            "CNI_IFNAME": self.ifname,
            "CNI_ARGS": self.args.raw,
            "CNI_PATH": ":".join(self.path),
        }


def _invalid(msg: str, details: str) -> CniError:
    return CniError(errors.INVALID_ENVIRONMENT, msg, details)


def validate_container_id(value: str, source: str = "CNI_CONTAINERID") -> str:
    if not _CONTAINER_ID.fullmatch(value):
        raise _invalid(
            f"{source} {value[:80]!r} is not a valid container ID",
            "it must start with a letter or digit, continue with letters, digits, '_', '.' "
            "or '-', and be at most 256 characters",
        )
    return value


def validate_ifname(value: str, source: str = "CNI_IFNAME") -> str:
    bad = (not value or value in (".", "..") or len(value.encode()) > 15
           or any(c in value for c in "/:") or any(c.isspace() for c in value))
    if bad:
        raise _invalid(
            f"{source} {value[:80]!r} is not a valid interface name",
            "use 1 to 15 characters without '/', ':' or whitespace, not '.' or '..'",
        )
    return value


def _validate_netns(value: str) -> str:
    if not value.startswith("/") or len(value) > _MAX_PATH or "\0" in value:
        raise _invalid(f"CNI_NETNS {value[:80]!r} is not an absolute path",
                       "pass the network namespace path, e.g. /var/run/netns/<name>")
    return value


def _parse_path(value: str) -> tuple[str, ...]:
    entries = tuple(p for p in value.split(":") if p)
    for entry in entries:
        if not entry.startswith("/") or "\0" in entry:
            raise _invalid(f"CNI_PATH entry {entry[:80]!r} is not an absolute directory",
                           "CNI_PATH lists plugin directories separated by ':', e.g. /opt/cni/bin")
    return entries


def parse_cni_args(raw: str) -> CniArgs:
    """``K=V;K=V`` with the Kubernetes keys checked against the Kubernetes name rules.

    As the reference plugins' ``types.LoadArgs``: a key given again takes its last value
    (Multus appends the runtime's CNI_ARGS to its own, so every key comes twice), and
    unknown keys pass when ``IgnoreUnknown`` is set. A key with an empty value is taken
    as not given: Multus always writes its five keys, and leaves a value empty when it
    has none (``K8S_POD_UID=`` for a runtime that sends no UID, and in thick mode's
    delegate API ``K8S_POD_INFRA_CONTAINER_ID=``); what is given is still checked."""
    if len(raw) > _MAX_ARGS:
        raise _invalid(f"CNI_ARGS is {len(raw)} characters long",
                       f"keep it under {_MAX_ARGS} characters")
    values: dict[str, str] = {}
    for pair in (p for p in raw.split(";") if p):
        key, sep, value = pair.partition("=")
        if not sep or not _ARG_KEY.fullmatch(key):
            raise _invalid(f"CNI_ARGS item {pair[:80]!r} is not KEY=VALUE",
                           "CNI_ARGS is 'KEY=VALUE' pairs separated by ';', keys alphanumeric")
        values[key] = value

    def check(key: str, pattern: re.Pattern[str], rule: str, max_len: int) -> str | None:
        value = values.get(key)
        if not value:
            return None
        if len(value) > max_len or not pattern.fullmatch(value):
            raise _invalid(f"CNI_ARGS {key}={value[:80]!r} is not valid", f"{key} must be {rule}")
        return value

    ignore = values.get("IgnoreUnknown", "0").lower()
    if ignore not in ("0", "1", "true", "false"):
        raise _invalid(f"CNI_ARGS IgnoreUnknown={ignore!r} is not valid",
                       "IgnoreUnknown must be 1, 0, true or false")
    ips: tuple[str, ...] = ()
    if values.get("IP"):
        try:
            ips = tuple(str(ipaddress.ip_address(v)) for v in values["IP"].split(","))
        except ValueError:
            raise _invalid(f"CNI_ARGS IP={values['IP'][:80]!r} is not valid",
                           "IP must be a comma-separated list of IP addresses") from None
    infra = values.get("K8S_POD_INFRA_CONTAINER_ID") or None
    if infra is not None:
        validate_container_id(infra, "CNI_ARGS K8S_POD_INFRA_CONTAINER_ID")
    known = {"IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_UID",
             "K8S_POD_INFRA_CONTAINER_ID", "MAC", "IP"}
    unknown = tuple(sorted(k for k in values if k not in known))
    ignore_unknown = ignore in ("1", "true")
    if unknown and not ignore_unknown:
        raise CniError(errors.INVALID_ENVIRONMENT,
                       f"CNI_ARGS has unknown keys: {', '.join(unknown)}",
                       "remove them or add IgnoreUnknown=1 (the CNI convention for extra args)")
    return CniArgs(
        raw=raw,
        pod_namespace=check("K8S_POD_NAMESPACE", _DNS_LABEL,
                            "a DNS label (lower-case letters, digits, '-', at most 63)", 63),
        pod_name=check("K8S_POD_NAME", _DNS_SUBDOMAIN,
                       "a DNS subdomain (lower-case letters, digits, '-', '.', at most 253)", 253),
        pod_uid=check("K8S_POD_UID", _POD_UID, "a pod UID (letters, digits, '-')", 64),
        infra_container_id=infra,
        mac=check("MAC", MAC, "a MAC address such as 02:00:00:00:00:01", 17),
        ips=ips,
        ignore_unknown=ignore_unknown,
        unknown=unknown,
    )


def _is_utf8(value: str) -> bool:
    """False for a value the shim relayed with bytes that are not UTF-8 (it decodes the
    environment with surrogateescape, which leaves them as lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_request(env: Mapping[str, str], stdin: bytes,
                  document: dict[str, Any] | CniError | None = None) -> CniRequest:
    """Validate the CNI environment of one call; raises CniError (code 4) naming the variable.
    ``document``: stdin already decoded (``netconf.read_document``)."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise _invalid(f"CNI_COMMAND {command[:40]!r} is not a CNI command" if command
                       else "CNI_COMMAND is not set",
                       f"the runtime sets it to one of {', '.join(COMMANDS)}")
    for name in ENV_NAMES:
        value = env.get(name, "")
        if not isinstance(value, str) or "\0" in value:
            raise _invalid(f"{name} is not a string", "pass CNI variables as plain text")
        if not _is_utf8(value):
            raise _invalid(f"{name} {value[:80]!r} is not UTF-8 text",
                           "CNI variables are text; this one holds bytes that are not UTF-8")
    missing = [name for name in _REQUIRED[command] if not env.get(name)]
    if missing:
        raise _invalid(f"{command} needs {', '.join(missing)}, which the runtime did not set",
                       "set the CNI environment variables the spec requires for this command")
    container_id = env.get("CNI_CONTAINERID", "")
    ifname = env.get("CNI_IFNAME", "")
    netns = env.get("CNI_NETNS", "")
    return CniRequest(
        command=command,
        container_id=validate_container_id(container_id) if container_id else "",
        netns=_validate_netns(netns) if netns else "",
        ifname=validate_ifname(ifname) if ifname else "",
        args=parse_cni_args(env.get("CNI_ARGS", "")),
        path=_parse_path(env.get("CNI_PATH", "")),
        stdin=stdin,
        document=document,
    )
