"""deploy/: every kustomization renders with a real kubectl, every object validates against
the Kubernetes schemas of a current release (offline, kubernetes-validate's strict
schemas; the NAD against the multi-net spec's CRD), and the pieces agree with each other
and with the code that reads them (agent flags, config file, CNI netconf, webhook)."""

from __future__ import annotations

import argparse
import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helpers.deploy import DEPLOY, OVERLAYS, Renders, kustomizations, one
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

import webhook as webhook_cli
from agent import agent, metrics
from agent.config_file import parse_config_text
from cni.netconf import parse_netconf
from deviceplugin import naming
from webhook.admission import handle
from webhook.nads import DirectorySource

K8S_VERSION = kv.latest_version()
NAD_SCHEMA = (Path(__file__).with_name("schemas")
              / "networkattachmentdefinition-k8s.cni.cncf.io-v1.json")
KUSTOMIZATIONS = kustomizations()


def _nad_validator() -> jsonschema.Validator:
    defs = kv.schema_contents(
        f"kubernetes-json-schema/v{K8S_VERSION}-local-strict/_definitions.json", K8S_VERSION)
    registry: Registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
    schema = json.loads(NAD_SCHEMA.read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


NAD_VALIDATOR = _nad_validator()


def validate(obj: dict[str, Any]) -> None:
    """Raise when the object does not match its schema (strict: unknown fields fail)."""
    if obj.get("kind") == "NetworkAttachmentDefinition":
        NAD_VALIDATOR.validate(obj)
        return
    kv.validate(obj, K8S_VERSION, strict=True)


def _id(path: Path) -> str:
    return str(path.relative_to(DEPLOY))


def test_every_overlay_exists_and_kustomizations_were_found():
    found = {_id(p) for p in KUSTOMIZATIONS}
    assert {f"overlays/{o}" for o in OVERLAYS} <= found
    assert {"base", "webhook", "ovs-dpdk", "networks/ovs", "networks/vpp", "examples/ovs",
            "examples/vpp"} <= found


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_id)
def test_renders_and_every_object_validates(renders: Renders, directory: Path):
    objects = renders(directory)
    assert objects, f"{directory} renders nothing"
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} in {_id(directory)}"
        try:
            validate(obj)
        except (jsonschema.ValidationError, kv.ValidationError) as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{where}: {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: {exc.message}")


def test_the_validation_really_rejects_mistakes(renders: Renders):
    """A control: the schemas catch a misspelt field, a wrong type and a bad NAD."""
    daemonset = copy.deepcopy(one(renders.overlay("both"), "DaemonSet", "numanet-agent"))
    daemonset["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kv.ValidationError):
        validate(daemonset)
    daemonset = copy.deepcopy(one(renders.overlay("both"), "DaemonSet", "numanet-agent"))
    daemonset["spec"]["template"]["spec"]["hostNetwork"] = "yes"
    with pytest.raises(kv.ValidationError):
        validate(daemonset)
    nad = copy.deepcopy(one(renders.overlay("both"), "NetworkAttachmentDefinition",
                            "vhostuser-ovs"))
    nad["spec"]["config"] = {"type": "numanet"}
    with pytest.raises(jsonschema.ValidationError):
        validate(nad)
    nad["spec"] = {"config": "{}", "plugin": "x"}
    with pytest.raises(jsonschema.ValidationError):
        validate(nad)


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(obj)
    return spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_inside_an_overlay_resolve(renders: Renders, overlay: str):
    objects = renders.overlay(overlay)
    names = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects}
    for obj in objects:
        if obj["kind"] not in ("DaemonSet", "Deployment"):
            continue
        ns = obj["metadata"]["namespace"]
        spec = _pod_spec(obj)
        assert ("ServiceAccount", ns, spec.get("serviceAccountName", "default")) in names \
            or "serviceAccountName" not in spec
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in _containers(obj):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{obj['metadata']['name']}: {mount['name']}"
        for volume in volumes.values():
            if "configMap" in volume:
                assert ("ConfigMap", ns, volume["configMap"]["name"]) in names, volume
            if "secret" in volume:
                # The only secret is the webhook's TLS, made by deploy/webhook/make-tls.sh.
                assert volume["secret"]["secretName"] == "numanet-webhook-tls"
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one(objects, "Service", "numanet-webhook")
    webhook_pods = one(objects, "Deployment", "numanet-webhook")["spec"]["template"]
    assert service["spec"]["selector"].items() <= webhook_pods["metadata"]["labels"].items()
    mwc = one(objects, "MutatingWebhookConfiguration")
    target = mwc["webhooks"][0]["clientConfig"]["service"]
    assert (target["namespace"], target["name"]) == (service["metadata"]["namespace"],
                                                     service["metadata"]["name"])
    assert target["port"] == service["spec"]["ports"][0]["port"]
    binding = one(objects, "ClusterRoleBinding", "numanet-webhook")
    subject = binding["subjects"][0]
    assert ("ServiceAccount", subject["namespace"], subject["name"]) in names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_minimal(renders: Renders, overlay: str):
    objects = renders.overlay(overlay)
    roles = [o for o in objects if o["kind"] in ("ClusterRole", "Role")]
    assert [r["metadata"]["name"] for r in roles] == ["numanet-webhook"]
    assert roles[0]["rules"] == [{"apiGroups": ["k8s.cni.cncf.io"],
                                  "resources": ["network-attachment-definitions"],
                                  "verbs": ["get"]}]
    bindings = [o for o in objects if o["kind"].endswith("Binding")]
    assert all(s["name"] != "numanet-agent" for b in bindings for s in b["subjects"])
    agent_sa = one(objects, "ServiceAccount", "numanet-agent")
    assert agent_sa["automountServiceAccountToken"] is False
    daemonset = one(objects, "DaemonSet", "numanet-agent")
    assert _pod_spec(daemonset)["automountServiceAccountToken"] is False


AGENT_HOST_PATHS = {
    "/var/lib/kubelet/device-plugins", "/var/lib/kubelet/pod-resources", "/run/numanet",
    "/run/openvswitch", "/run/vpp", "/dev/hugepages", "/var/run/k8s.cni.cncf.io/devinfo",
    "/sys", "/opt/cni/bin", "/etc/cni/net.d",
}


def _config(objects: list[dict[str, Any]]) -> str:
    configmaps = [o for o in objects if o["kind"] == "ConfigMap"
                  and o["metadata"]["name"].startswith("numanet-config")]
    assert len(configmaps) == 1
    return str(configmaps[0]["data"]["config.yaml"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_agent_daemonset_matches_the_agent(renders: Renders, overlay: str):
    objects = renders.overlay(overlay)
    daemonset = one(objects, "DaemonSet", "numanet-agent")
    spec = _pod_spec(daemonset)
    volumes = {v["name"]: v for v in spec["volumes"]}
    host_paths = {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v}
    assert AGENT_HOST_PATHS <= host_paths
    (agent_c,) = spec["containers"]
    mounts = {m["mountPath"]: m for m in agent_c["volumeMounts"]}
    sys_mount = next(m for m in agent_c["volumeMounts"]
                     if volumes[m["name"]].get("hostPath", {}).get("path") == "/sys")
    assert sys_mount.get("readOnly") is True
    # Container paths the agent uses by default are mounted at the same place as on the host.
    for path in ("/var/lib/kubelet/device-plugins", "/var/lib/kubelet/pod-resources",
                 "/run/numanet", "/var/run/k8s.cni.cncf.io/devinfo", "/dev/hugepages"):
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
    # The args are real flags of `numanet agent`.
    parser = argparse.ArgumentParser()
    agent.add_arguments(parser)
    args = parser.parse_args(agent_c["args"][1:])
    assert agent_c["args"][0] == "agent"
    assert mounts[str(Path(args.config).parent)]["name"] == "config"
    assert str(args.sysfs) == sys_mount["mountPath"]
    # Probes hit the metrics port the agent listens on.
    env = {e["name"]: e.get("value") for e in agent_c["env"]}
    _, port = metrics.resolve_address(env["NUMANET_METRICS_ADDRESS"])
    ports = {p["name"]: p["containerPort"] for p in agent_c["ports"]}
    assert ports["metrics"] == port
    assert agent_c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert agent_c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert agent_c["resources"]["requests"]["cpu"] and agent_c["resources"]["requests"]["memory"]
    # The init container installs the CNI with the host's /opt/cni/bin mounted writable.
    (init,) = spec["initContainers"]
    init_mounts = {volumes[m["name"]]["hostPath"]["path"]: m for m in init["volumeMounts"]}
    assert not init_mounts["/opt/cni/bin"].get("readOnly")
    assert init_mounts["/usr"]["readOnly"] is True
    # The config in the ConfigMap is one the agent accepts.
    parse_config_text(_config(objects), source=f"overlays/{overlay}/config.yaml")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_networks_and_config_agree(renders: Renders, overlay: str):
    objects = renders.overlay(overlay)
    config = parse_config_text(_config(objects))
    nads = [o for o in objects if o["kind"] == "NetworkAttachmentDefinition"]
    assert nads
    for nad in nads:
        resource = nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"]
        netconf = parse_netconf(nad["spec"]["config"].encode(), "ADD")
        assert netconf.name == nad["metadata"]["name"]
        pool = config.pool(netconf.pool or "")
        assert pool is not None, f"NAD {netconf.name} names pool {netconf.pool} not in config"
        assert resource == naming.resource_name(config.resource_prefix, pool.name)
        if netconf.bridge is not None:
            assert netconf.bridge == config.ovs.bridge
    pools_with_nad = {json.loads(n["spec"]["config"])["pool"] for n in nads}
    assert pools_with_nad == {p.name for p in config.pools}
    ovs = [o for o in objects if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "ovs-dpdk"]
    assert bool(ovs) == ("ovs" in config.vswitches_in_use())
    if ovs:
        env = {e["name"]: e["value"] for e in _pod_spec(ovs[0])["containers"][0]["env"]}
        assert env["OVS_BRIDGE"] == config.ovs.bridge
        assert config.ovs.db == f"unix:{env['OVS_RUNDIR']}/db.sock"


def test_webhook_deployment_matches_the_webhook_command(renders: Renders):
    objects = renders.overlay("both")
    deployment = one(objects, "Deployment", "numanet-webhook")
    spec = _pod_spec(deployment)
    (container,) = spec["containers"]
    parser = argparse.ArgumentParser()
    webhook_cli.add_arguments(parser)
    args = parser.parse_args(container["args"][1:])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert str(args.tls_cert.parent) == mounts["tls"]["mountPath"]
    assert str(args.config) == mounts["config"]["mountPath"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["https"] == args.port
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mwc = one(objects, "MutatingWebhookConfiguration")["webhooks"][0]
    assert mwc["clientConfig"]["service"]["path"] == "/mutate"
    assert mwc["admissionReviewVersions"] == ["v1"] and mwc["sideEffects"] == "None"
    excluded = mwc["namespaceSelector"]["matchExpressions"][0]["values"]
    assert deployment["metadata"]["namespace"] in excluded  # never blocks its own pods


def _quantity_mib(value: str) -> float:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", value)
    assert match, value
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


def test_ovs_dpdk_config_and_hugepages_agree(renders: Renders):
    objects = renders(DEPLOY / "ovs-dpdk")
    configmap = next(o for o in objects if o["kind"] == "ConfigMap")
    data = configmap["data"]
    assert all(re.fullmatch(r"[a-z0-9-]+", key) for key in data)  # what ovs-dpdk.sh accepts
    daemonset = one(objects, "DaemonSet", "ovs-dpdk")
    container = _pod_spec(daemonset)["containers"][0]
    requested = _quantity_mib(container["resources"]["requests"]["hugepages-2Mi"])
    assert sum(int(n) for n in data["dpdk-socket-mem"].split(",")) <= requested
    assert container["resources"]["limits"]["hugepages-2Mi"] == \
        container["resources"]["requests"]["hugepages-2Mi"]
    assert int(data["pmd-maxsleep"]) > 0  # idle PMDs must not spin a whole core
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/run/openvswitch", "/run/numanet", data["dpdk-hugepage-dir"]} <= mounts


@pytest.mark.parametrize("example, overlay", [("ovs", "ovs-only"), ("vpp", "vpp-only")])
def test_example_pods_are_guaranteed_and_aligned(renders: Renders, tmp_path: Path,
                                                 example: str, overlay: str):
    (pod,) = renders(DEPLOY / "examples" / example)
    objects = renders.overlay(overlay)
    config = parse_config_text(_config(objects))
    for container in pod["spec"]["containers"]:
        res = container["resources"]
        assert res["requests"] == res["limits"], "Guaranteed QoS needs requests == limits"
        assert float(res["requests"]["cpu"]).is_integer(), "whole CPUs for the static policy"
        assert any(k.startswith("hugepages-") for k in res["requests"])
        assert any(k.startswith(config.resource_prefix + "/") for k in res["requests"])
    # Through the webhook, with the overlay's NADs: nothing to add but podnetinfo.
    nads = tmp_path / "nads"
    nads.mkdir()
    for obj in objects:
        if obj["kind"] == "NetworkAttachmentDefinition":
            (nads / f"{obj['metadata']['name']}.json").write_text(json.dumps(obj))
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                          "namespace": pod["metadata"]["namespace"], "operation": "CREATE",
                          "object": pod}}
    answer = json.loads(handle(json.dumps(review).encode(), DirectorySource(nads),
                               config.resource_prefix).body)["response"]
    assert answer["allowed"] is True and "warnings" not in answer
    ops = json.loads(base64.b64decode(answer["patch"]))
    # The example asks for hugepages, so it also learns its container's name.
    assert {op["path"] for op in ops} == {"/spec/volumes/-", "/spec/containers/0/volumeMounts/-",
                                          "/spec/containers/0/env"}
