"""IPAM delegation: exec the plugin named in ``ipam.type`` from CNI_PATH, as the spec says.

The delegate gets the same CNI environment and the same network configuration. When it
does not speak the caller's cniVersion (Debian's host-local stops at 1.0.0), the config
is handed down at the highest version both support, with any prevResult re-rendered in
that version, and its result is read back version-free (``cni.result``).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from cni import errors
from cni.errors import CniError
from cni.netconf import SUPPORTED_VERSIONS, NetConf, version_tuple
from cni.request import CniRequest
from cni.result import IpamResult, parse_result, render_result

_PLUGIN_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class IpamDelegate:
    """Runs IPAM plugins; remembers each plugin's supported versions (keyed by path+mtime)."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._versions: dict[tuple[str, int], tuple[str, ...]] = {}
        self._lock = threading.Lock()

    # -- the spec's verbs ---------------------------------------------------------------

    def add(self, request: CniRequest, conf: NetConf) -> IpamResult:
        out = self._run("ADD", request, conf)
        _, result = parse_result(_json(out, f"IPAM plugin {conf.ipam_type}"),
                                 f"IPAM plugin {conf.ipam_type}")
        if not result.ips:
            raise CniError(errors.IPAM_FAILURE, f"IPAM plugin {conf.ipam_type} returned no IPs",
                           "check the ipam ranges in the network configuration")
        return result

    def delete(self, request: CniRequest, conf: NetConf) -> None:
        self._run("DEL", request, conf)

    def check(self, request: CniRequest, conf: NetConf) -> None:
        self._run("CHECK", request, conf)

    def gc(self, request: CniRequest, conf: NetConf) -> bool:
        """Pass GC on when the plugin speaks 1.1.0; False when it cannot (nothing to do)."""
        plugin = self.find(conf.ipam_type or "", request.path)
        if "1.1.0" not in self.versions(plugin):
            return False
        self._run("GC", request, conf)
        return True

    def status(self, request: CniRequest, conf: NetConf) -> None:
        plugin = self.find(conf.ipam_type or "", request.path)
        if "1.1.0" in self.versions(plugin):
            self._run("STATUS", request, conf)

    # -- plumbing -------------------------------------------------------------------------

    def find(self, name: str, cni_path: tuple[str, ...]) -> Path:
        for directory in cni_path:
            candidate = Path(directory) / name
            try:
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    return candidate
            except (OSError, ValueError):  # a name too long (ENAMETOOLONG), a NUL: not there
                continue
        raise CniError(errors.INVALID_NETWORK_CONFIG,
                       f"IPAM plugin {name!r} is not in CNI_PATH ({':'.join(cni_path) or 'empty'})",
                       "install the plugin in one of those directories or fix ipam.type")

    def versions(self, plugin: Path) -> tuple[str, ...]:
        key = (str(plugin), plugin.stat().st_mtime_ns)
        with self._lock:
            known = self._versions.get(key)
        if known is not None:
            return known
        proc = self._exec(plugin, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.0.0"}')
        try:
            found = tuple(json.loads(proc.stdout)["supportedVersions"])
        except (ValueError, KeyError, TypeError, RecursionError):
            found = ("0.3.0", "0.3.1", "0.4.0")  # plugins too old to answer VERSION properly
        with self._lock:
            self._versions[key] = found
        return found

    def _negotiate(self, plugin: Path, conf: NetConf) -> str:
        theirs = set(self.versions(plugin))
        if conf.cni_version in theirs:
            return conf.cni_version
        common = [v for v in SUPPORTED_VERSIONS if v in theirs
                  and version_tuple(v) <= version_tuple(conf.cni_version)]
        if not common:
            raise CniError(errors.INCOMPATIBLE_VERSION,
                           f"IPAM plugin {plugin.name} supports none of the versions up to "
                           f"{conf.cni_version}",
                           f"it supports {', '.join(sorted(theirs))}; change cniVersion")
        return common[-1]

    def _stdin(self, conf: NetConf, version: str, command: str) -> bytes:
        doc: dict[str, Any] = dict(conf.raw)
        doc["cniVersion"] = version
        prev = doc.get("prevResult")
        if prev is not None and version != conf.cni_version:
            interfaces, ipam = parse_result(prev, "prevResult")
            doc["prevResult"] = render_result(version, interfaces, ipam)
        if command != "GC":
            doc.pop("cni.dev/valid-attachments", None)
            doc.pop("cni.dev/attachments", None)
        return json.dumps(doc).encode()

    def _run(self, command: str, request: CniRequest, conf: NetConf) -> bytes:
        name = conf.ipam_type or ""
        plugin = self.find(name, request.path)
        version = self._negotiate(plugin, conf)
        env = replace(request, command=command).env()
        proc = self._exec(plugin, env, self._stdin(conf, version, command))
        if proc.returncode == 0:
            return proc.stdout
        raise _plugin_error(name, proc)

    def _exec(self, plugin: Path, env: dict[str, str],
              stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        full_env = {"PATH": _PLUGIN_PATH_ENV, **env}
        try:
            return subprocess.run([str(plugin)], input=stdin, env=full_env, capture_output=True,
                                  timeout=self.timeout, check=False, close_fds=True)
        except subprocess.TimeoutExpired:
            raise CniError(errors.IPAM_FAILURE,
                           f"IPAM plugin {plugin.name} did not finish within {self.timeout:.0f} s",
                           "it was killed; check that its data store is reachable") from None
        except OSError as exc:
            raise CniError(errors.IPAM_FAILURE, f"IPAM plugin {plugin} could not run: {exc}",
                           "check that it is an executable CNI plugin") from None


def _json(out: bytes, source: str) -> Any:
    try:
        return json.loads(out)
    except (ValueError, RecursionError):
        raise CniError(errors.IPAM_FAILURE, f"{source} printed no JSON result",
                       f"its output began {out[:120]!r}") from None


def _plugin_error(name: str, proc: subprocess.CompletedProcess[bytes]) -> CniError:
    """The delegate's own error, prefixed with its name; spec codes are kept as they are."""
    try:
        doc = json.loads(proc.stdout)
        code, msg = int(doc["code"]), str(doc["msg"])
        details = str(doc.get("details") or "")
    except (ValueError, KeyError, TypeError, RecursionError):
        tail = (proc.stderr or proc.stdout)[-300:].decode(errors="replace").strip()
        return CniError(errors.IPAM_FAILURE, f"IPAM plugin {name} failed (exit {proc.returncode})",
                        tail or "it printed nothing")
    return CniError(code if code < 100 else errors.IPAM_FAILURE, f"IPAM plugin {name}: {msg}",
                    details)
