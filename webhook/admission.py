"""AdmissionReview v1 in, AdmissionReview v1 out (same uid), for the ``/mutate`` endpoint.

A body that is not an AdmissionReview v1 with a request uid gets HTTP 400 with a plain
message: there is no uid to answer to, and the API server then applies the webhook's
failurePolicy. A readable review of a pod the webhook cannot handle (unparsable networks
annotation, malformed pod, NAD source unreachable) is answered allowed=false with a
status message, so the user sees why at ``kubectl apply`` time. Networks without a NAD
are allowed unchanged, with a warning the user sees.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from typing import Any

from webhook.mutation import PodShapeError, mutate_pod
from webhook.nads import NadLookupError, NadSource
from webhook.networks import NetworkAnnotationError

log = logging.getLogger(__name__)

API_VERSION = "admission.k8s.io/v1"
MAX_WARNING = 256  # the API server may truncate longer warnings


class BadReview(ValueError):
    """Not an AdmissionReview we can answer: HTTP 400 with this message."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"


def _review(uid: str, allowed: bool, **response: Any) -> bytes:
    out = {"apiVersion": API_VERSION, "kind": "AdmissionReview",
           "response": {"uid": uid, "allowed": allowed, **response}}
    return json.dumps(out, separators=(",", ":")).encode()


def _parse(body: bytes) -> dict[str, Any]:
    try:
        review = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadReview(f"body is not JSON: {exc}") from None
    if not isinstance(review, dict):
        raise BadReview("body is not a JSON object")
    if review.get("kind") != "AdmissionReview":
        raise BadReview(f"kind is {review.get('kind')!r}, expected AdmissionReview")
    if review.get("apiVersion") != API_VERSION:
        raise BadReview(f"apiVersion is {review.get('apiVersion')!r}: this webhook serves "
                        f"{API_VERSION} only (set admissionReviewVersions: [v1])")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("AdmissionReview request has no uid")
    return request


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _pod_ref(request: dict[str, Any], pod: dict[str, Any], namespace: str) -> str:
    meta = _obj(pod.get("metadata"))
    name = request.get("name") or meta.get("name") or f"{meta.get('generateName') or ''}*"
    return f"{namespace}/{name}"


def handle(body: bytes, source: NadSource, prefix: str) -> Answer:
    """Answer one admission request body."""
    try:
        request = _parse(body)
    except BadReview as exc:
        log.warning("malformed admission review reason=%s", exc)
        return Answer(400, f"malformed AdmissionReview: {exc}\n".encode(), "text/plain")
    uid = request["uid"]
    kind = _obj(request.get("kind"))
    pod = request.get("object")
    if kind.get("kind") != "Pod" or request.get("operation", "CREATE") != "CREATE":
        return Answer(200, _review(uid, True))
    if not isinstance(pod, dict):
        return Answer(200, _review(uid, False, status={
            "code": 400, "message": "numanet webhook: request.object is not a pod object"}))
    meta = _obj(pod.get("metadata"))
    namespace = request.get("namespace") or meta.get("namespace") or "default"
    ref = _pod_ref(request, pod, namespace)
    try:
        mutation = mutate_pod(pod, namespace, source, prefix)
    except (NetworkAnnotationError, PodShapeError) as exc:
        log.info("pod refused pod=%s uid=%s reason=%s", ref, uid, exc)
        return Answer(200, _review(uid, False, status={
            "code": 400, "message": f"numanet webhook: {exc}"}))
    except NadLookupError as exc:
        log.error("NAD lookup failed pod=%s uid=%s reason=%s", ref, uid, exc)
        return Answer(200, _review(uid, False, status={
            "code": 500, "message": f"numanet webhook cannot read the pod's networks: {exc}; "
                                    "retry when the API server answers"}))
    extra: dict[str, Any] = {}
    if mutation.warnings:
        extra["warnings"] = [w[:MAX_WARNING] for w in mutation.warnings]
    if mutation.patch:
        extra["patchType"] = "JSONPatch"
        extra["patch"] = base64.b64encode(json.dumps(mutation.patch).encode()).decode()
    log.info("pod admitted pod=%s uid=%s resources=%s patch_ops=%d warnings=%d",
             ref, uid, ",".join(f"{r}={n}" for r, n in sorted(mutation.needed.items())) or "-",
             len(mutation.patch), len(mutation.warnings))
    return Answer(200, _review(uid, True, **extra))
