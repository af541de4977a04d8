"""A stand-in for the Kubernetes API server's resource.k8s.io/v1 ResourceSlices and
ResourceClaims, over real HTTP (http.server), for numanet's DRA driver (dra/).

Written from the API server's behaviour for these resources: list with the field
selectors ``spec.nodeName`` and ``spec.driver`` (the ones ResourceSlices support), create
(409 AlreadyExists), replace (409 Conflict on a stale ``metadata.resourceVersion``), delete
(404 NotFound), get; answers are the objects with ``uid``, ``resourceVersion``,
``generation`` and ``creationTimestamp`` set, errors a ``Status``. Every object written to
it is checked against the strict resource.k8s.io/v1 schema (kubernetes-validate, unknown
fields fail) and against the limits the API server's validation adds and the schema does
not carry (at most 128 devices in a slice, device names DNS labels, unique in the pool,
at most 32 attributes and capacities per device, qualified attribute names, string values
of at most 64 characters, exactly one value per attribute, pool name and generation); a
refused object is answered 422 Invalid, as the API server does, and kept in ``refused``.

Claims are put in by the test (``add_claim``), as the scheduler would have allocated them.
``kubeconfig(path)`` writes a kubeconfig that points the ``kubernetes`` client here.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

GROUP = "/apis/resource.k8s.io/v1"
MAX_DEVICES = 128
MAX_ATTRIBUTES_AND_CAPACITIES = 32
MAX_ATTRIBUTE_VALUE = 64
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
_VALUE_KINDS = ("int", "bool", "string", "version", "ints", "bools", "strings", "versions")


class Invalid(ValueError):
    pass


def _validator() -> Callable[[dict[str, Any]], None]:
    from kubernetes_validate import utils as kv

    version = kv.latest_version()

    def validate(obj: dict[str, Any]) -> None:
        try:
            kv.validate(obj, version, strict=True)
        except (kv.ValidationError, kv.SchemaNotFoundError) as exc:
            path = ".".join(str(p) for p in getattr(exc, "absolute_path", ()))
            raise Invalid(f"schema: {path}: {getattr(exc, 'message', exc)}") from None
    return validate


def _check_slice_limits(obj: dict[str, Any], others: list[dict[str, Any]]) -> None:
    """What the API server's ResourceSlice validation adds to the schema."""
    name = obj["metadata"].get("name", "")
    if not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
        raise Invalid(f"metadata.name {name!r}: must be a DNS subdomain")
    spec = obj["spec"]
    pool = spec["pool"]
    parts = pool["name"].split("/")
    if len(pool["name"]) > 253 or not all(_DNS_SUBDOMAIN.fullmatch(p) for p in parts):
        raise Invalid(f"spec.pool.name {pool['name']!r}: DNS subdomains separated by '/'")
    if pool["generation"] < 0 or pool["resourceSliceCount"] < 1:
        raise Invalid("spec.pool: generation must be >= 0, resourceSliceCount >= 1")
    if sum(1 for k in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection")
           if spec.get(k)) != 1:
        raise Invalid("spec: exactly one of nodeName, nodeSelector, allNodes, "
                      "perDeviceNodeSelection is required")
    devices = spec.get("devices") or []
    if len(devices) > MAX_DEVICES:
        raise Invalid(f"spec.devices: must have at most {MAX_DEVICES} items, has {len(devices)}")
    seen: set[str] = set()
    for other in others:  # device names are unique in the pool (same generation)
        if (other["spec"]["driver"] == spec["driver"]
                and other["spec"]["pool"]["name"] == pool["name"]
                and other["spec"]["pool"]["generation"] == pool["generation"]
                and other["metadata"]["name"] != name):
            seen.update(d["name"] for d in other["spec"].get("devices") or [])
    for i, device in enumerate(devices):
        where = f"spec.devices[{i}]"
        if not _DNS_LABEL.fullmatch(device["name"]):
            raise Invalid(f"{where}.name {device['name']!r}: must be a DNS label")
        if device["name"] in seen:
            raise Invalid(f"{where}.name {device['name']!r}: duplicate in pool")
        seen.add(device["name"])
        attributes = device.get("attributes") or {}
        if len(attributes) + len(device.get("capacity") or {}) > MAX_ATTRIBUTES_AND_CAPACITIES:
            raise Invalid(f"{where}: at most {MAX_ATTRIBUTES_AND_CAPACITIES} attributes "
                          "and capacities")
        for key, value in attributes.items():
            domain, _, ident = key.rpartition("/")
            if (domain and (not _DNS_SUBDOMAIN.fullmatch(domain) or len(domain) > 63)) \
                    or not _C_IDENTIFIER.fullmatch(ident):
                raise Invalid(f"{where}.attributes[{key}]: not a qualified name")
            set_kinds = [k for k in _VALUE_KINDS if value.get(k) is not None]
            if len(set_kinds) != 1:
                raise Invalid(f"{where}.attributes[{key}]: exactly one value, got {set_kinds}")
            if isinstance(value.get("string"), str) and len(value["string"]) > MAX_ATTRIBUTE_VALUE:
                raise Invalid(f"{where}.attributes[{key}].string: at most "
                              f"{MAX_ATTRIBUTE_VALUE} characters")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class ApiServerStandin:
    def __init__(self, validate: bool = True) -> None:
        self._lock = threading.Lock()
        self.slices: dict[str, dict[str, Any]] = {}
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}
        self.received: list[tuple[str, str, dict[str, Any]]] = []  # (verb, path, body)
        self.refused: list[tuple[str, str]] = []  # (path, why)
        self.requests: list[tuple[str, str]] = []  # (verb, path with query)
        self.fail_next: list[int] = []  # HTTP codes to answer the next requests with
        self._versions = itertools.count(1)
        self._validate = _validator() if validate else (lambda obj: None)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    def start(self) -> ApiServerStandin:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes: without this, Nagle's algorithm and
            # the client's delayed ACK hold the body back ~40 ms on every answer.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> dict[str, Any] | None:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else None

            def _answer(self, code: int, doc: dict[str, Any]) -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, verb: str) -> None:
                body = self._body()
                code, doc = standin.handle(verb, self.path, body)
                self._answer(code, doc)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._handle("PUT")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="apiserver-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def kubeconfig(self, path: Path) -> Path:
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "numanet", "user": {"token": "standin"}}],
            "contexts": [{"name": "standin",
                          "context": {"cluster": "standin", "user": "numanet"}}],
        }
        path.write_text(json.dumps(doc))
        return path

    # --- what a test puts in or looks at ---

    def add_claim(self, claim: dict[str, Any]) -> dict[str, Any]:
        """Store an allocated ResourceClaim (validated like any object)."""
        claim = copy.deepcopy(claim)
        self._validate(claim)
        meta = claim.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._versions))
        with self._lock:
            self.claims[(meta["namespace"], meta["name"])] = claim
        return copy.deepcopy(claim)

    def remove_claim(self, namespace: str, name: str) -> None:
        with self._lock:
            self.claims.pop((namespace, name), None)

    def node_slices(self, node: str, driver: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(s) for s in self.slices.values()
                    if s["spec"].get("nodeName") == node
                    and (driver is None or s["spec"]["driver"] == driver)]

    def devices(self, node: str, driver: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(pool, device name) -> device, from the highest generation of each pool."""
        slices = self.node_slices(node, driver)
        newest: dict[str, int] = {}
        for s in slices:
            pool = s["spec"]["pool"]
            newest[pool["name"]] = max(newest.get(pool["name"], 0), pool["generation"])
        return {(s["spec"]["pool"]["name"], d["name"]): d for s in slices
                if s["spec"]["pool"]["generation"] == newest[s["spec"]["pool"]["name"]]
                for d in s["spec"].get("devices") or []}

    # --- the API ---

    def handle(self, verb: str, raw_path: str, body: dict[str, Any] | None
               ) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path.rstrip("/")
        with self._lock:
            self.requests.append((verb, raw_path))
            if self.fail_next:
                code = self.fail_next.pop(0)
                return code, _status(code, "InternalError", "stand-in told to fail")
            if body is not None:
                self.received.append((verb, path, copy.deepcopy(body)))
        if path == f"{GROUP}/resourceslices":
            if verb == "GET":
                return 200, self._list(query.get("fieldSelector", ""))
            if verb == "POST" and body is not None:
                return self._write(None, body)
        match = re.fullmatch(rf"{GROUP}/resourceslices/([^/]+)", path)
        if match:
            name = match[1]
            if verb == "GET":
                with self._lock:
                    found = self.slices.get(name)
                return (200, copy.deepcopy(found)) if found else self._not_found(name)
            if verb == "PUT" and body is not None:
                return self._write(name, body)
            if verb == "DELETE":
                with self._lock:
                    gone = self.slices.pop(name, None)
                return (200, gone) if gone else self._not_found(name)
        match = re.fullmatch(rf"{GROUP}/namespaces/([^/]+)/resourceclaims/([^/]+)", path)
        if match and verb == "GET":
            with self._lock:
                claim = self.claims.get((match[1], match[2]))
            if claim is None:
                return 404, _status(404, "NotFound", f'resourceclaims.resource.k8s.io '
                                    f'"{match[2]}" not found')
            return 200, copy.deepcopy(claim)
        return 404, _status(404, "NotFound", f"the server could not find {verb} {path}")

    def _not_found(self, name: str) -> tuple[int, dict[str, Any]]:
        return 404, _status(404, "NotFound", f'resourceslices.resource.k8s.io "{name}" not found')

    def _list(self, selector: str) -> dict[str, Any]:
        wanted: dict[str, str] = {}
        for term in filter(None, selector.split(",")):
            key, _, value = term.partition("=")
            if key not in ("spec.nodeName", "spec.driver"):
                raise ValueError(f"field selector {key} not supported for ResourceSlices")
            wanted[key.removeprefix("spec.")] = value
        with self._lock:
            items = [copy.deepcopy(s) for s in self.slices.values()
                     if all(s["spec"].get(k) == v for k, v in wanted.items())]
            version = str(next(self._versions))
        return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSliceList",
                "metadata": {"resourceVersion": version}, "items": items}

    def _write(self, name: str | None, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if name is not None and meta.get("name") != name:
            return 400, _status(400, "BadRequest", "metadata.name does not match the URL")
        try:
            self._validate(obj)
            with self._lock:
                others = list(self.slices.values())
            _check_slice_limits(obj, others)
        except Invalid as exc:
            with self._lock:
                self.refused.append((meta.get("name", ""), str(exc)))
            return 422, _status(422, "Invalid", f"ResourceSlice is invalid: {exc}")
        with self._lock:
            current = self.slices.get(meta["name"])
            if name is None and current is not None:
                return 409, _status(409, "AlreadyExists",
                                    f'resourceslices.resource.k8s.io "{meta["name"]}" '
                                    "already exists")
            if name is not None:
                if current is None:
                    return self._not_found(name)
                if meta.get("resourceVersion") not in (None, "",
                                                       current["metadata"]["resourceVersion"]):
                    return 409, _status(409, "Conflict", "the object has been modified; "
                                        "please apply your changes to the latest version")
                meta["uid"] = current["metadata"]["uid"]
                meta["creationTimestamp"] = current["metadata"]["creationTimestamp"]
                meta["generation"] = current["metadata"]["generation"] + (
                    current["spec"] != obj["spec"])
            else:
                meta["uid"] = str(uuid.uuid4())
                meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                meta["generation"] = 1
            meta["resourceVersion"] = str(next(self._versions))
            self.slices[meta["name"]] = obj
            return (201 if name is None else 200), copy.deepcopy(obj)
