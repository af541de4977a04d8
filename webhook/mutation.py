"""What the webhook changes in a pod, as an RFC 6902 JSON Patch.

For every network in the networks annotation whose NetworkAttachmentDefinition names a
numanet resource (``<prefix>/<pool>`` in ``k8s.v1.cni.cncf.io/resourceName``), the first
container gets one unit of that resource in requests and limits; resources any container
already asks for are left alone. The pod also gets the downward-API volume ``podnetinfo``
(its labels and annotations, so the app can read ``k8s.v1.cni.cncf.io/network-status``)
mounted at ``/etc/podnetinfo`` in the first container: the names and layout
network-resources-injector uses, so apps written for it work unchanged. Containers that ask
for hugepages also get, as that injector gives them, their hugepage requests and limits in
MiB there (``hugepages_1G_request_<container>``, ``..._limit_...``, ``hugepages_2M_...``),
the volume mounted, and ``CONTAINER_NAME`` in their environment, which is how a DPDK app
(app-netutil) finds its own files to size its memory.

Running it again on its own output changes nothing (the API server may call twice).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from webhook.nads import NadSource, resource_name_of
from webhook.networks import NETWORKS_ANNOTATION, parse_networks

log = logging.getLogger(__name__)

PODNETINFO_VOLUME = "podnetinfo"
PODNETINFO_MOUNT_PATH = "/etc/podnetinfo"
HUGEPAGE_RESOURCES = {"hugepages-1Gi": "1G", "hugepages-2Mi": "2M"}  # -> name in the file
CONTAINER_NAME_ENV = "CONTAINER_NAME"


class PodShapeError(ValueError):
    """The pod object is not shaped like a pod; the message names the field."""


@dataclass
class Mutation:
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    needed: dict[str, int] = field(default_factory=dict)  # resource -> count the networks need


def _pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _is_numanet_resource(resource: str, prefix: str) -> bool:
    head, sep, pool = resource.partition("/")
    return bool(sep) and head == prefix and bool(pool) and "/" not in pool


def _dict_field(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PodShapeError(f"{where}.{key} must be an object")
    return value


def _list_field(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise PodShapeError(f"{where}.{key} must be a list of objects")
    return value


def _already_requested(containers: list[dict[str, Any]], resource: str) -> int:
    total = 0
    for i, container in enumerate(containers):
        res = _dict_field(container, "resources", f"spec.containers[{i}]")
        amounts = [_dict_field(res, k, f"spec.containers[{i}].resources").get(resource)
                   for k in ("limits", "requests")]
        present = [a for a in amounts if a is not None]
        if present:
            try:
                total += max(int(str(a)) for a in present)
            except ValueError:
                total += 1  # a quantity such as "1k": present, count it as at least one
    return total


def _resource_ops(container: dict[str, Any], add: dict[str, int]) -> list[dict[str, Any]]:
    base = "/spec/containers/0/resources"
    if "resources" not in container or container["resources"] is None:
        return [{"op": "add", "path": base,
                 "value": {"requests": {r: str(n) for r, n in add.items()},
                           "limits": {r: str(n) for r, n in add.items()}}}]
    ops: list[dict[str, Any]] = []
    resources = container["resources"]
    for key in ("requests", "limits"):
        if not resources.get(key):
            ops.append({"op": "add", "path": f"{base}/{key}", "value": {}})
        for resource, count in add.items():
            ops.append({"op": "add", "path": f"{base}/{key}/{_pointer(resource)}",
                        "value": str(count)})
    return ops


def _hugepage_sizes(container: dict[str, Any], where: str) -> list[str]:
    """The hugepage resources a container asks for, in requests or limits."""
    res = _dict_field(container, "resources", where)
    asked = {**_dict_field(res, "requests", f"{where}.resources"),
             **_dict_field(res, "limits", f"{where}.resources")}
    return [r for r in HUGEPAGE_RESOURCES if r in asked]


def _podnetinfo_items(containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
    ]
    for i, container in enumerate(containers):
        name = container.get("name")
        for resource in _hugepage_sizes(container, f"spec.containers[{i}]"):
            for kind in ("request", "limit"):
                items.append({
                    "path": f"hugepages_{HUGEPAGE_RESOURCES[resource]}_{kind}_{name}",
                    "resourceFieldRef": {"containerName": name,
                                         "resource": f"{kind}s.{resource}", "divisor": "1Mi"}})
    return items


def _volume_ops(spec: dict[str, Any], containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    volumes = _list_field(spec, "volumes", "spec")
    if not any(v.get("name") == PODNETINFO_VOLUME for v in volumes):
        volume = {"name": PODNETINFO_VOLUME,
                  "downwardAPI": {"items": _podnetinfo_items(containers)}}
        ops.append({"op": "add", "path": "/spec/volumes/-", "value": volume} if "volumes" in spec
                   and spec["volumes"] is not None
                   else {"op": "add", "path": "/spec/volumes", "value": [volume]})
    for i, container in enumerate(containers):
        hugepages = bool(_hugepage_sizes(container, f"spec.containers[{i}]"))
        if i == 0 or hugepages:
            ops += _mount_ops(container, i)
        if hugepages:
            ops += _container_name_ops(container, i)
    return ops


def _mount_ops(container: dict[str, Any], i: int) -> list[dict[str, Any]]:
    mounts = _list_field(container, "volumeMounts", f"spec.containers[{i}]")
    if any(m.get("name") == PODNETINFO_VOLUME or m.get("mountPath") == PODNETINFO_MOUNT_PATH
           for m in mounts):
        return []
    mount = {"name": PODNETINFO_VOLUME, "mountPath": PODNETINFO_MOUNT_PATH}
    if container.get("volumeMounts") is not None:
        return [{"op": "add", "path": f"/spec/containers/{i}/volumeMounts/-", "value": mount}]
    return [{"op": "add", "path": f"/spec/containers/{i}/volumeMounts", "value": [mount]}]


def _container_name_ops(container: dict[str, Any], i: int) -> list[dict[str, Any]]:
    env = _list_field(container, "env", f"spec.containers[{i}]")
    if any(e.get("name") == CONTAINER_NAME_ENV for e in env):
        return []
    var = {"name": CONTAINER_NAME_ENV, "value": container.get("name")}
    if container.get("env") is not None:
        return [{"op": "add", "path": f"/spec/containers/{i}/env/-", "value": var}]
    return [{"op": "add", "path": f"/spec/containers/{i}/env", "value": [var]}]


def mutate_pod(pod: dict[str, Any], namespace: str, source: NadSource, prefix: str) -> Mutation:
    """The patch for one pod; raises NetworkAnnotationError, NadLookupError, PodShapeError."""
    meta = _dict_field(pod, "metadata", "pod")
    annotation = _dict_field(meta, "annotations", "metadata").get(NETWORKS_ANNOTATION)
    result = Mutation()
    if annotation is None:
        return result
    if not isinstance(annotation, str):
        raise PodShapeError(f"annotation {NETWORKS_ANNOTATION} must be a string")
    selections = parse_networks(annotation, namespace)
    needed: Counter[str] = Counter()
    for selection in selections:
        nad = source.lookup(selection.namespace, selection.name)
        if nad is None:
            result.warnings.append(
                f"numanet: network {selection} has no NetworkAttachmentDefinition; "
                "no resource added for it")
            continue
        resource = resource_name_of(nad)
        if resource and _is_numanet_resource(resource, prefix):
            needed[resource] += 1
    if not needed:
        return result
    result.needed = dict(needed)
    spec = _dict_field(pod, "spec", "pod")
    containers = _list_field(spec, "containers", "spec")
    if not containers:
        raise PodShapeError("spec.containers is empty: the pod has no container to give "
                            f"{', '.join(sorted(needed))} to")
    add: dict[str, int] = {}
    for resource, count in sorted(needed.items()):
        present = _already_requested(containers, resource)
        if present == 0:
            add[resource] = count
        elif present < count:
            result.warnings.append(
                f"numanet: the pod's containers ask for {present} {resource} but "
                f"{count} networks use it; the extra networks will fail to attach")
    if add:
        result.patch.extend(_resource_ops(containers[0], add))
    result.patch.extend(_volume_ops(spec, containers))
    return result
