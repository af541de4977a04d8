"""The API server, through the ``kubernetes`` client: ResourceSlices and ResourceClaims
(resource.k8s.io/v1) as plain dicts, the form the builder and the claim reader use.

In the agent's pod the client uses its service account (in-cluster config); elsewhere a
kubeconfig file (``--kubeconfig``), as the tests' API server stand-in is reached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

__all__ = ["ApiException", "KubeResources", "ResourceApi", "api_client"]

FIELD_MANAGER = "numanet"
_TIMEOUT = (5.0, 30.0)  # connect, read


class ResourceApi(Protocol):
    """What dra/ asks of the API server."""

    def list_slices(self, node: str, driver: str) -> list[dict[str, Any]]: ...

    def create_slice(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def replace_slice(self, name: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def delete_slice(self, name: str) -> None: ...

    def read_claim(self, namespace: str, name: str) -> dict[str, Any]: ...


def api_client(kubeconfig: Path | None = None) -> client.ApiClient:
    """A client from ``kubeconfig``, else from the pod's service account."""
    if kubeconfig is not None:
        return config.new_client_from_config(config_file=str(kubeconfig))
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


class KubeResources:
    """``ResourceApi`` over the kubernetes client's ResourceV1Api."""

    def __init__(self, api: client.ApiClient) -> None:
        self._client = api
        self._api = client.ResourceV1Api(api)

    def _dict(self, obj: Any) -> dict[str, Any]:
        out = self._client.sanitize_for_serialization(obj)
        assert isinstance(out, dict)
        return out

    def list_slices(self, node: str, driver: str) -> list[dict[str, Any]]:
        reply = self._api.list_resource_slice(
            field_selector=f"spec.nodeName={node},spec.driver={driver}",
            _request_timeout=_TIMEOUT)
        return [self._dict(item) for item in reply.items or []]

    def create_slice(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._dict(self._api.create_resource_slice(
            _slice(body), field_manager=FIELD_MANAGER, _request_timeout=_TIMEOUT))

    def replace_slice(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._dict(self._api.replace_resource_slice(
            name, _slice(body), field_manager=FIELD_MANAGER, _request_timeout=_TIMEOUT))

    def delete_slice(self, name: str) -> None:
        try:
            self._api.delete_resource_slice(name, _request_timeout=_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def read_claim(self, namespace: str, name: str) -> dict[str, Any]:
        return self._dict(self._api.read_namespaced_resource_claim(
            name, namespace, _request_timeout=_TIMEOUT))

    def close(self) -> None:
        self._client.close()


def _slice(body: dict[str, Any]) -> client.V1ResourceSlice:
    model = client.V1ResourceSlice.from_dict(body)
    if model is None:  # pragma: no cover - from_dict returns None only for None
        raise ValueError("empty ResourceSlice")
    return model
