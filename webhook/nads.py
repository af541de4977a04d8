"""Where the webhook finds NetworkAttachmentDefinitions: the API server, or a directory.

``ApiServerSource`` talks to the Kubernetes API with the pod's service account (token and
CA from the projected volume; no client library). ``DirectorySource`` reads NAD manifests
from YAML/JSON files, for tests and clusters run offline.

``lookup`` returns the NAD as a dict, None when it does not exist, and raises
``NadLookupError`` when it cannot tell (API down, RBAC missing, unreadable file).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Protocol

import yaml

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RESOURCE_NAME_ANNOTATION = "k8s.v1.cni.cncf.io/resourceName"
NAD_KIND = "NetworkAttachmentDefinition"


class NadLookupError(RuntimeError):
    """The NAD source could not answer; the message says why and what to check."""


class NadSource(Protocol):
    def lookup(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class ApiServerSource:
    """GET .../namespaces/<ns>/network-attachment-definitions/<name> with a bearer token."""

    def __init__(self, base_url: str, token_file: Path, ca_file: Path | None,
                 timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_file = Path(token_file)
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    @classmethod
    def in_cluster(cls, sa_dir: Path = SA_DIR) -> ApiServerSource:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise NadLookupError(
                "KUBERNETES_SERVICE_HOST is not set: not running in a pod; "
                "pass --nad-dir DIR to read NetworkAttachmentDefinitions from files")
        token, ca = sa_dir / "token", sa_dir / "ca.crt"
        for path in (token, ca):
            if not path.is_file():
                raise NadLookupError(
                    f"{path} is missing: the webhook needs its service account token mounted "
                    "(automountServiceAccountToken must not be false)")
        if ":" in host:
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", token, ca)

    def lookup(self, namespace: str, name: str) -> dict[str, Any] | None:
        path = (f"/apis/k8s.cni.cncf.io/v1/namespaces/{urllib.parse.quote(namespace, safe='')}"
                f"/network-attachment-definitions/{urllib.parse.quote(name, safe='')}")
        # Bound service account tokens rotate: read the file for every request.
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise NadLookupError(
                f"cannot read service account token {self.token_file}: {exc}") from None
        request = urllib.request.Request(
            self.base_url + path,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self._context) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            hint = (" (RBAC: the webhook's ClusterRole must allow get on "
                    "k8s.cni.cncf.io network-attachment-definitions)"
                    if exc.code in (401, 403) else "")
            raise NadLookupError(
                f"API server answered {exc.code} {exc.reason} for NAD {namespace}/{name}"
                f"{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NadLookupError(
                f"cannot reach the API server at {self.base_url} for NAD {namespace}/{name}: "
                f"{reason}") from None
        try:
            nad = json.loads(body)
        except json.JSONDecodeError:
            raise NadLookupError(
                f"API server sent a body that is not JSON for NAD {namespace}/{name}") from None
        if not isinstance(nad, dict):
            raise NadLookupError(f"API server sent a non-object for NAD {namespace}/{name}")
        return nad


class DirectorySource:
    """NAD manifests in ``*.yaml``, ``*.yml`` or ``*.json`` files (several per file is fine).

    Reloaded when a file in the directory changes; a NAD without a namespace is in
    ``default``, as ``kubectl apply`` would put it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise NadLookupError(f"NAD directory {self.directory} does not exist")
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._nads: dict[tuple[str, str], dict[str, Any]] = {}
        self._reload_if_changed()

    def _files(self) -> tuple[list[Path], tuple[tuple[str, int, int], ...]]:
        """The manifest files and their (name, mtime, size) stamp, for change detection."""
        try:
            files = sorted(p for p in self.directory.iterdir()
                           if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
            stats = [p.stat() for p in files]
        except OSError as exc:  # the directory or a file went away between two calls
            raise NadLookupError(f"cannot list NAD directory {self.directory}: {exc}") from None
        return files, tuple((p.name, st.st_mtime_ns, st.st_size)
                            for p, st in zip(files, stats, strict=True))

    def _reload_if_changed(self) -> None:
        files, stamp = self._files()
        if stamp == self._stamp:
            return
        nads: dict[tuple[str, str], dict[str, Any]] = {}
        for path in files:
            try:
                docs = list(yaml.safe_load_all(path.read_text()))
            except (OSError, yaml.YAMLError) as exc:
                raise NadLookupError(f"cannot read NAD file {path}: {exc}") from None
            for doc in docs:
                if not isinstance(doc, dict) or doc.get("kind") != NAD_KIND:
                    continue
                meta = doc.get("metadata")
                if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
                    raise NadLookupError(f"NAD in {path} has no metadata.name")
                nads[(str(meta.get("namespace") or "default"), meta["name"])] = doc
        self._nads, self._stamp = nads, stamp
        log.info("loaded NetworkAttachmentDefinitions directory=%s count=%d",
                 self.directory, len(nads))

    def lookup(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self._reload_if_changed()
            return self._nads.get((namespace, name))


def resource_name_of(nad: dict[str, Any]) -> str | None:
    """The ``k8s.v1.cni.cncf.io/resourceName`` annotation, or None."""
    annotations = (nad.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(RESOURCE_NAME_ANNOTATION) if isinstance(annotations, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None
