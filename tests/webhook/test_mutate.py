"""The webhook over real HTTPS: AdmissionReview in, JSON Patch out, checked by applying it."""

from __future__ import annotations

import base64
import copy
import json
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from helpers.admission import Client, make_tls, nad
from kubernetes_validate import utils as kv

from webhook import server as server_module
from webhook.nads import DirectorySource
from webhook.server import WebhookServer

NETWORKS = "k8s.v1.cni.cncf.io/networks"


def pod(networks: str | None = None, containers: list[dict[str, Any]] | None = None,
        **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "dpdk-app", "namespace": "default"}
    if networks is not None:
        meta["annotations"] = {NETWORKS: networks}
    if containers is None:
        containers = [
            {"name": "app", "image": "testpmd", "resources": {
                "requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
             "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets"}]},
            {"name": "sidecar", "image": "busybox", "resources": {}},
        ]
    body = {"containers": containers,
            "volumes": [{"name": "kube-api-access", "projected": {"sources": []}}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def patched(pod_obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["allowed"] is True, response
    if "patch" not in response:
        return pod_obj
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    # jsonpatch follows RFC 6902 strictly: adding below a missing parent fails.
    return jsonpatch.apply_patch(pod_obj, ops)


def podnetinfo_ok(p: dict[str, Any]) -> None:
    volumes = [v for v in p["spec"]["volumes"] if v["name"] == "podnetinfo"]
    assert volumes == [{"name": "podnetinfo", "downwardAPI": {"items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}}]
    mounts = [m for m in p["spec"]["containers"][0]["volumeMounts"] if m["name"] == "podnetinfo"]
    assert mounts == [{"name": "podnetinfo", "mountPath": "/etc/podnetinfo"}]
    for c in p["spec"]["containers"][1:]:
        assert "podnetinfo" not in [m["name"] for m in c.get("volumeMounts", [])]


def test_comma_form_adds_one_unit_per_network_to_the_first_container(client: Client):
    original = pod("vhostuser-ovs@vhu0, default/vhostuser-ovs@vhu1,net/memif-vpp,sriov-net,"
                   "plain-bridge")
    response = client.review(copy.deepcopy(original))
    assert "warnings" not in response
    result = patched(original, response)
    first = result["spec"]["containers"][0]["resources"]
    assert first["requests"] == {"cpu": "2", "memory": "1Gi", "numanet.io/vhostuser-ovs": "2",
                                 "numanet.io/memif-vpp": "1"}
    assert first["limits"] == first["requests"]
    # Foreign resources (SR-IOV) are for their own injector; the sidecar is untouched.
    assert result["spec"]["containers"][1] == original["spec"]["containers"][1]
    podnetinfo_ok(result)


def test_json_form_with_namespaces_and_interfaces(client: Client):
    networks = json.dumps([{"name": "memif-vpp", "namespace": "net", "interface": "memif0"},
                           {"name": "vhostuser-ovs"},
                           {"name": "no-namespace", "ips": ["10.1.1.2/24"]}])
    original = pod(networks)
    result = patched(original, client.review(copy.deepcopy(original)))
    requests = result["spec"]["containers"][0]["resources"]["requests"]
    assert requests["numanet.io/vhostuser-ovs"] == "2"  # no-namespace NAD counts as default
    assert requests["numanet.io/memif-vpp"] == "1"


def test_the_pods_namespace_is_the_default_for_bare_names(client: Client):
    original = pod("memif-vpp")  # the NAD lives in "net"
    original["metadata"]["namespace"] = "net"
    result = patched(original, client.review(copy.deepcopy(original), namespace="net"))
    assert result["spec"]["containers"][0]["resources"]["limits"]["numanet.io/memif-vpp"] == "1"


def test_second_pass_over_the_patched_pod_changes_nothing(client: Client):
    original = pod("vhostuser-ovs,vhostuser-ovs")
    once = patched(original, client.review(copy.deepcopy(original)))
    response = client.review(copy.deepcopy(once))
    assert response["allowed"] is True
    assert "patch" not in response and "warnings" not in response


def test_resources_already_requested_are_honoured_and_short_counts_warned(client: Client):
    original = pod("vhostuser-ovs,vhostuser-ovs,net/memif-vpp")
    original["spec"]["containers"][1]["resources"] = {
        "limits": {"numanet.io/vhostuser-ovs": "1"}, "requests": {"numanet.io/vhostuser-ovs": "1"}}
    response = client.review(copy.deepcopy(original))
    result = patched(original, response)
    first = result["spec"]["containers"][0]["resources"]["requests"]
    assert "numanet.io/vhostuser-ovs" not in first  # the sidecar already asks for it
    assert first["numanet.io/memif-vpp"] == "1"
    assert len(response["warnings"]) == 1
    assert "ask for 1 numanet.io/vhostuser-ovs but 2 networks use it" in response["warnings"][0]
    podnetinfo_ok(result)


def test_unknown_network_is_allowed_unchanged_with_a_warning(client: Client):
    original = pod("does-not-exist")
    response = client.review(copy.deepcopy(original))
    assert response["allowed"] is True
    assert "patch" not in response
    assert response["warnings"] == [
        "numanet: network default/does-not-exist has no NetworkAttachmentDefinition; "
        "no resource added for it"]


def test_unknown_network_beside_a_known_one_still_patches_the_known_one(client: Client):
    original = pod("ghost,vhostuser-ovs")
    response = client.review(copy.deepcopy(original))
    assert len(response["warnings"]) == 1 and "default/ghost" in response["warnings"][0]
    result = patched(original, response)
    assert result["spec"]["containers"][0]["resources"]["limits"]["numanet.io/vhostuser-ovs"] == "1"


def test_bare_pod_without_resources_volumes_or_mounts_gets_them_created(client: Client):
    original = pod("vhostuser-ovs", containers=[{"name": "app", "image": "x"}])
    del original["spec"]["volumes"]
    result = patched(original, client.review(copy.deepcopy(original)))
    res = result["spec"]["containers"][0]["resources"]
    assert res == {"requests": {"numanet.io/vhostuser-ovs": "1"},
                   "limits": {"numanet.io/vhostuser-ovs": "1"}}
    podnetinfo_ok(result)


def test_empty_requests_map_is_filled(client: Client):
    original = pod("vhostuser-ovs", containers=[{"name": "app", "image": "x", "resources": {},
                                                 "volumeMounts": []}], volumes=[])
    result = patched(original, client.review(copy.deepcopy(original)))
    assert result["spec"]["containers"][0]["resources"]["requests"] == {
        "numanet.io/vhostuser-ovs": "1"}
    podnetinfo_ok(result)


def test_hugepage_requests_and_limits_reach_the_containers_that_ask(client: Client):
    huge_1g = {"hugepages-1Gi": "2Gi", "memory": "1Gi", "cpu": "2"}
    huge_2m = {"hugepages-2Mi": "256Mi", "memory": "256Mi"}
    original = pod("vhostuser-ovs", containers=[
        {"name": "dpdk", "image": "testpmd", "resources": {"requests": huge_1g,
                                                          "limits": huge_1g}},
        {"name": "helper", "image": "x", "resources": {"limits": huge_2m},
         "env": [{"name": "A", "value": "b"}]},
        {"name": "plain", "image": "busybox"},
    ])
    result = patched(original, client.review(copy.deepcopy(original)))
    [volume] = [v for v in result["spec"]["volumes"] if v["name"] == "podnetinfo"]
    files = {i["path"]: i.get("resourceFieldRef") for i in volume["downwardAPI"]["items"]}
    assert files == {
        "labels": None, "annotations": None,
        "hugepages_1G_request_dpdk": {"containerName": "dpdk",
                                      "resource": "requests.hugepages-1Gi", "divisor": "1Mi"},
        "hugepages_1G_limit_dpdk": {"containerName": "dpdk",
                                    "resource": "limits.hugepages-1Gi", "divisor": "1Mi"},
        "hugepages_2M_request_helper": {"containerName": "helper",
                                        "resource": "requests.hugepages-2Mi", "divisor": "1Mi"},
        "hugepages_2M_limit_helper": {"containerName": "helper",
                                      "resource": "limits.hugepages-2Mi", "divisor": "1Mi"},
    }
    dpdk, helper, plain = result["spec"]["containers"]
    for container in (dpdk, helper):  # each finds its own files by name
        assert {"name": "podnetinfo", "mountPath": "/etc/podnetinfo"} in container["volumeMounts"]
        assert {"name": "CONTAINER_NAME", "value": container["name"]} in container["env"]
    assert helper["env"][0] == {"name": "A", "value": "b"}
    assert "volumeMounts" not in plain and "env" not in plain
    again = client.review(copy.deepcopy(result))  # a second pass changes nothing
    assert "patch" not in again
    # What the API server would store: a valid Pod by the strict schema of a current release.
    kv.validate(result, kv.latest_version(), strict=True)


@pytest.mark.parametrize("networks", [None, "", "plain-bridge", "sriov-net"])
def test_pods_without_numanet_networks_pass_untouched(client: Client, networks):
    response = client.review(pod(networks))
    assert response == {"uid": response["uid"], "allowed": True}


def test_other_kinds_and_operations_are_allowed_without_looking(client: Client):
    response = client.review(pod("vhostuser-ovs"), operation="UPDATE")
    assert response["allowed"] is True and "patch" not in response
    response = client.review({"kind": "Service"}, kind={"group": "", "version": "v1",
                                                        "kind": "Service"})
    assert response["allowed"] is True and "patch" not in response


@pytest.mark.parametrize("networks, message", [
    ("a/b/c", "more than one '/'"),
    ("net@a@b", "more than one '@'"),
    ("net@", "ends with '@'"),
    ("Upper", "not a valid NetworkAttachmentDefinition name"),
    ("../../etc/passwd", "more than one '/'"),
    ("../x", "namespace '..' in '../x' is not a DNS label"),
    ('[{"name": 3}]', "element 0 must be an object with a string 'name'"),
    ("[{broken", "looks like JSON but does not parse"),
    ('{"name": "x"}', "the JSON form must be a list"),
    ("vhostuser-ovs@" + "x" * 16, "is not a valid interface name"),
    ('[{"name": "vhostuser-ovs\\n"}]', "not a valid NetworkAttachmentDefinition name"),
    ('[{"name": "vhostuser-ovs", "interface": "net1\\n"}]', "is not a valid interface name"),
])
def test_unreadable_networks_annotation_is_refused_with_the_reason(client: Client, networks,
                                                                   message):
    response = client.review(pod(networks))
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert message in response["status"]["message"]
    assert "patch" not in response


def test_malformed_pod_object_is_refused_naming_the_field(client: Client):
    bad = pod("vhostuser-ovs", containers=[{"name": "app", "resources": {"limits": ["x"]}}])
    response = client.review(bad)
    assert response["allowed"] is False
    assert "spec.containers[0].resources.limits must be an object" in response["status"]["message"]
    response = client.review("not a pod")  # type: ignore[arg-type]
    assert response["allowed"] is False and "not a pod object" in response["status"]["message"]
    response = client.review(pod("vhostuser-ovs", containers=[]))
    assert response["allowed"] is False and "no container" in response["status"]["message"]


@pytest.mark.parametrize("body, status, message", [
    (b"", 400, b"expected 1 to"),
    (b"{not json", 400, b"body is not JSON"),
    (b"[]", 400, b"not a JSON object"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}).encode(), 400,
     b"expected AdmissionReview"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                 "request": {"uid": "u"}}).encode(), 400, b"admission.k8s.io/v1 only"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), 400,
     b"no request object"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"object": {}}}).encode(), 400, b"no uid"),
])
def test_malformed_reviews_get_http_400_with_a_message(client: Client, body, status, message):
    code, data = client.post_raw(body)
    assert code == status
    assert message in data


def test_wrong_content_type_method_and_path(client: Client):
    assert client.post_raw(b"{}", content_type="text/plain")[0] == 415
    assert client.post_raw(b"{}", path="/other")[0] == 404
    assert client.post_raw(b"", method="GET", path="/healthz") == (200, b"ok\n")


def test_clients_must_trust_the_ca(server: WebhookServer, tmp_path: Path):
    other = make_tls(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        Client(server.port, other.ca).post_raw(b"{}")


def test_parallel_reviews_and_a_stalled_client_do_not_block(client: Client, server: WebhookServer):
    stalled = socket.create_connection(("127.0.0.1", server.port))  # never says hello
    try:
        results: list[tuple[int, dict[str, Any]]] = []
        errors: list[BaseException] = []

        def one(i: int) -> None:
            try:
                original = pod("vhostuser-ovs," * (i % 3) + "net/memif-vpp")
                results.append((i, patched(original, client.review(copy.deepcopy(original)))))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == []
        assert len(results) == 24
        for i, result in results:
            req = result["spec"]["containers"][0]["resources"]["requests"]
            assert req.get("numanet.io/vhostuser-ovs") == (str(i % 3) if i % 3 else None)
        assert time.monotonic() - start < 20
    finally:
        stalled.close()


def test_rotated_certificate_is_served_without_restart(tls, nad_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "_RELOAD_CHECK_SECONDS", 0.0)
    with WebhookServer(("127.0.0.1", 0), tls.cert, tls.key, DirectorySource(nad_dir),
                       "numanet.io") as srv:
        assert Client(srv.port, tls.ca).post_raw(b"", "x", "/healthz", "GET")[0] == 200
        fresh = make_tls(tmp_path / "rotated")
        # Kubernetes swaps secret files atomically; so do we.
        for src, dst in ((fresh.cert, tls.cert), (fresh.key, tls.key)):
            tmp = dst.with_suffix(".new")
            tmp.write_bytes(src.read_bytes())
            tmp.replace(dst)
        assert Client(srv.port, fresh.ca).post_raw(b"", "x", "/healthz", "GET")[0] == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            Client(srv.port, tls.ca).post_raw(b"", "x", "/healthz", "GET")


def test_custom_prefix_and_nad_added_while_running(tls, tmp_path):
    nads = tmp_path / "nads"
    nads.mkdir()
    with WebhookServer(("127.0.0.1", 0), tls.cert, tls.key, DirectorySource(nads),
                       "example.com") as srv:
        c = Client(srv.port, tls.ca)
        original = pod("late")
        assert "patch" not in c.review(copy.deepcopy(original))
        (nads / "late.yaml").write_text(json.dumps(nad("late", "example.com/late")))
        result = patched(original, c.review(copy.deepcopy(original)))
        assert result["spec"]["containers"][0]["resources"]["limits"]["example.com/late"] == "1"
        # numanet.io resources are not ours under another prefix
        (nads / "other.yaml").write_text(json.dumps(nad("other", "numanet.io/other")))
        assert "patch" not in c.review(pod("other"))
