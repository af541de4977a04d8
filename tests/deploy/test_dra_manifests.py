"""deploy/dra: the DRA overlay and its example render, validate (the generic test in
test_manifests.py covers every kustomization) and agree with the code: the agent's DRA
flags, mounts and RBAC, the config's DRA pools, the DeviceClass the driver name, the
claim templates and the NAD the resource names the slices carry, and the example's claim
aligns numanet's slot with dra-driver-cpu's CPUs on resource.kubernetes.io/numaNode."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from helpers.deploy import DEPLOY, Renders, one

from agent import agent
from agent.config_file import parse_config_text
from cni.netconf import parse_netconf
from deviceplugin import naming
from dra.plugin import PLUGINS_SUBDIR, REGISTRY_SUBDIR
from dra.slices import ATTR_NUMA_NODE, ATTR_RESOURCE_NAME

DRA = DEPLOY / "dra"


def _agent_container(objects: list[dict]) -> tuple[dict, dict]:
    daemonset = one(objects, "DaemonSet", "numanet-agent")
    spec = daemonset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def test_the_agent_reaches_the_api_server_the_plugin_watcher_and_the_cdi_dir(renders: Renders):
    objects = renders(DRA)
    spec, container = _agent_container(objects)
    assert spec["automountServiceAccountToken"] is True
    assert one(objects, "ServiceAccount", "numanet-agent")["automountServiceAccountToken"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]]["hostPath"]["path"]
              for m in container["volumeMounts"] if "hostPath" in volumes[m["name"]]}
    parser = argparse.ArgumentParser()
    agent.add_arguments(parser)
    args = parser.parse_args(container["args"][1:])
    kubelet = Path(args.kubelet_dir)
    for path in (kubelet / PLUGINS_SUBDIR, kubelet / REGISTRY_SUBDIR, args.dra_cdi_dir,
                 naming.CDI_DIR):
        assert mounts.get(str(path)) == str(path), path
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_rbac_is_what_the_driver_does_and_no_more(renders: Renders):
    objects = renders(DRA)
    role = one(objects, "ClusterRole", "numanet-agent-dra")
    assert role["rules"] == [
        {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"],
         "verbs": ["list", "watch", "create", "update", "delete"]},
        {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"], "verbs": ["get"]},
    ]
    binding = one(objects, "ClusterRoleBinding", "numanet-agent-dra")
    assert binding["roleRef"]["name"] == "numanet-agent-dra"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "numanet-agent",
                                    "namespace": "numanet-system"}]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "ClusterRole"] \
        == ["numanet-agent-dra"]


def test_config_device_class_templates_and_nad_agree(renders: Renders):
    objects = renders(DRA)
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"
                    and o["metadata"]["name"].startswith("numanet-config")]
    config = parse_config_text(configmap["data"]["config.yaml"])
    dra_pools = config.pools_of("dra")
    assert dra_pools and set(dra_pools) == {p.name for p in config.pools}
    driver = config.resource_prefix
    device_class = one(objects, "DeviceClass", driver)
    assert device_class["spec"]["selectors"] == [
        {"cel": {"expression": f'device.driver == "{driver}"'}}]
    templates = {t["metadata"]["name"]: t for t in objects
                 if t["kind"] == "ResourceClaimTemplate"}
    assert set(templates) == set(dra_pools)
    domain, _, attribute = ATTR_RESOURCE_NAME.rpartition("/")
    for pool, template in templates.items():
        (request,) = template["spec"]["spec"]["devices"]["requests"]
        assert request["exactly"]["deviceClassName"] == driver
        (selector,) = request["exactly"]["selectors"]
        expression = " ".join(selector["cel"]["expression"].split())
        assert expression == (f'device.attributes["{domain}"].{attribute} == '
                              f'"{config.resource(pool)}"')
    (nad,) = [o for o in objects if o["kind"] == "NetworkAttachmentDefinition"]
    netconf = parse_netconf(nad["spec"]["config"].encode(), "ADD")
    assert netconf.pool in dra_pools
    assert nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"] \
        == config.resource(netconf.pool or "")


def test_the_example_aligns_the_slot_and_the_cpus_on_one_numa_node(renders: Renders):
    overlay = renders(DRA)
    objects = renders(DRA / "example")
    template = one(objects, "ResourceClaimTemplate", "vhostuser-with-cpus")
    devices = template["spec"]["spec"]["devices"]
    requests = {r["name"]: r["exactly"] for r in devices["requests"]}
    assert requests["net"]["deviceClassName"] == "numanet.io"
    assert requests["cpus"]["deviceClassName"] == "dra.cpu"
    assert devices["constraints"] == [{"requests": ["net", "cpus"],
                                       "matchAttribute": ATTR_NUMA_NODE}]
    pod = one(objects, "Pod", "testpmd-dra")
    (claim,) = pod["spec"]["resourceClaims"]
    assert claim["resourceClaimTemplateName"] == template["metadata"]["name"]
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["claims"] == [{"name": claim["name"]}]
    # No extended resource: the slot comes from the claim, not from the device plugin.
    assert not [r for r in container["resources"]["requests"] if r.startswith("numanet.io/")]
    network = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"].split("@")[0]
    nad = one(overlay, "NetworkAttachmentDefinition", network)
    selector = requests["net"]["selectors"][0]["cel"]["expression"]
    assert json.dumps(nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"]) \
        in selector
