"""The pod's ``k8s.v1.cni.cncf.io/networks`` annotation, as Multus reads it.

Two forms: a comma-separated list of ``[namespace/]name[@interface]`` and a JSON list of
network selection objects (``{"name": ..., "namespace": ..., "interface": ...}``).
Names are checked before they reach the API server's URL or a file name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from deviceplugin.naming import is_dns_label, is_dns_subdomain

NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"

# Interface names: what Linux accepts, minus the characters that break paths and parsing.
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class NetworkAnnotationError(ValueError):
    """The annotation cannot be read; the message quotes the part that is wrong."""


@dataclass(frozen=True)
class NetworkSelection:
    namespace: str
    name: str
    interface: str | None = None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _checked(namespace: str, name: str, interface: str | None, source: str) -> NetworkSelection:
    if not is_dns_label(namespace):
        raise NetworkAnnotationError(
            f"{NETWORKS_ANNOTATION}: namespace {namespace!r} in {source!r} is not a DNS label")
    if not is_dns_subdomain(name):
        raise NetworkAnnotationError(
            f"{NETWORKS_ANNOTATION}: network name {name!r} in {source!r} is not a valid "
            "NetworkAttachmentDefinition name (lower-case letters, digits, '-' and '.')")
    if interface is not None and not _IFNAME.fullmatch(interface):
        raise NetworkAnnotationError(
            f"{NETWORKS_ANNOTATION}: interface {interface!r} in {source!r} is not a valid "
            "interface name (at most 15 letters, digits, '_', '.', '-')")
    return NetworkSelection(namespace, name, interface)


def _parse_element(text: str, default_namespace: str) -> NetworkSelection:
    if text.count("/") > 1:
        raise NetworkAnnotationError(
            f"{NETWORKS_ANNOTATION}: {text!r} has more than one '/': use namespace/name@interface")
    namespace, _, rest = text.rpartition("/")
    if rest.count("@") > 1:
        raise NetworkAnnotationError(
            f"{NETWORKS_ANNOTATION}: {text!r} has more than one '@': use namespace/name@interface")
    name, at, interface = rest.partition("@")
    if at and not interface:
        raise NetworkAnnotationError(
            f"{NETWORKS_ANNOTATION}: {text!r} ends with '@': name the interface or drop the '@'")
    return _checked(namespace or default_namespace, name, interface or None, text)


def _parse_json(text: str, default_namespace: str) -> list[NetworkSelection]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NetworkAnnotationError(
            f"{NETWORKS_ANNOTATION}: looks like JSON but does not parse ({exc.msg} at "
            f"character {exc.pos})") from None
    if not isinstance(items, list):
        raise NetworkAnnotationError(f"{NETWORKS_ANNOTATION}: the JSON form must be a list")
    selections = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise NetworkAnnotationError(
                f"{NETWORKS_ANNOTATION}: element {index} must be an object with a string 'name'")
        namespace = item.get("namespace") or default_namespace
        interface = item.get("interface")
        if not isinstance(namespace, str) or not (interface is None or isinstance(interface, str)):
            raise NetworkAnnotationError(
                f"{NETWORKS_ANNOTATION}: element {index}: 'namespace' and 'interface' must be "
                "strings")
        selections.append(_checked(namespace, item["name"], interface or None, f"element {index}"))
    return selections


def parse_networks(annotation: str, default_namespace: str) -> list[NetworkSelection]:
    """Every network the pod asks for, in order, namespaces filled in."""
    text = annotation.strip()
    if not text:
        return []
    if text.startswith(("[", "{")):
        return _parse_json(text, default_namespace)
    return [_parse_element(part.strip(), default_namespace)
            for part in text.split(",") if part.strip()]
