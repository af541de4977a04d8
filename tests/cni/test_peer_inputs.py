"""What real callers send that numanet once refused, taken one piece at a time (the
whole calls are replayed in tests/peers): empty CNI_ARGS values (Multus writes its five
keys even when it has no value), CNI_ARGS in any order (containerd's come from a Go map),
Multus' device-info file name without an extension, and a network config without
deviceID from a runtime calling numanet itself (the device is then the kubelet's answer).
The strict checks stay: what is given is checked, ownership comes from the kubelet."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest

from cni import errors
from cni.container_config import devinfo_file
from cni.errors import CniError
from cni.lookups import device_of_pod
from cni.netconf import NetConf
from cni.request import CniRequest, parse_cni_args

CID = "3f" * 32
UID = "6f1c8a2e-5b7d-4c3e-9a10-000000000a0a"


def test_an_empty_value_is_a_key_not_given():
    # Multus' createRuntimeConf with a runtime that sends no pod UID, and thick mode's
    # delegate API, which has no sandbox ID
    args = parse_cni_args("IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a;"
                          "K8S_POD_INFRA_CONTAINER_ID=;K8S_POD_UID=")
    assert (args.pod_namespace, args.pod_name) == ("default", "pod-a")
    assert args.pod_uid is None and args.infra_container_id is None
    assert parse_cni_args("IgnoreUnknown=1;MAC=;IP=").mac is None


@pytest.mark.parametrize("raw", [
    "K8S_POD_UID=../x", "K8S_POD_INFRA_CONTAINER_ID=../sandbox", "K8S_POD_NAME=Pod_A",
    # the last value wins, so a hostile last value is the one checked
    "K8S_POD_NAME=pod-a;K8S_POD_NAME=../pod-a",
])
def test_what_is_given_is_still_checked(raw: str):
    with pytest.raises(CniError) as err:
        parse_cni_args(raw)
    assert err.value.code == errors.INVALID_ENVIRONMENT


def test_containerd_args_in_any_order_are_the_same_args():
    pairs = ["IgnoreUnknown=1", "K8S_POD_NAMESPACE=default", "K8S_POD_NAME=pod-a",
             f"K8S_POD_INFRA_CONTAINER_ID={CID}", f"K8S_POD_UID={UID}"]
    parsed = {(a.pod_namespace, a.pod_name, a.infra_container_id, a.pod_uid, a.ignore_unknown)
              for a in (parse_cni_args(";".join(p)) for p in itertools.permutations(pairs))}
    assert parsed == {("default", "pod-a", CID, UID, True)}


def test_multus_device_info_name_without_extension(tmp_path: Path):
    # network-attachment-definition-client GetCNIDeviceInfoPath("<ns>/<net>-<cid>_<if>")
    name = f"default-vhostuser-ovs-{CID}_net1"
    path = tmp_path / "cni" / name
    assert devinfo_file(str(path), tmp_path) == path
    assert devinfo_file(str(tmp_path / "cni" / "pod-a-net1-device.json"), tmp_path)


@pytest.mark.parametrize("requested", [
    "cni/.hidden", "cni/.x.json.123.tmp", "cni/../dp/x", "dp/x", "cni/", "x",
])
def test_device_info_names_that_stay_refused(tmp_path: Path, requested: str):
    with pytest.raises(CniError) as err:
        devinfo_file(str(tmp_path / requested), tmp_path)
    assert err.value.code == errors.INVALID_NETWORK_CONFIG


# -- the device of a config that names none ------------------------------------------------

RESOURCE = "numanet.io/vhostuser-ovs"


def ctx_with(held: dict[str, set[str]] | None, attached: dict[str, tuple[str, str]]):
    """A Context's parts device_of_pod uses: the pool's resource, the kubelet's answer,
    and attachment records (device -> (container ID, ifname))."""
    def record(device_id: str):
        owner = attached.get(device_id)
        return None if owner is None else SimpleNamespace(
            same_attachment=lambda cid, ifname: (cid, ifname) == owner)
    return SimpleNamespace(
        slots=SimpleNamespace(pool_resource=lambda pool: RESOURCE if pool == "vhostuser-ovs"
                              else None),
        pod_resources=SimpleNamespace(pod_devices=lambda ns, name: held),
        records=SimpleNamespace(get=record))


REQ = CniRequest(command="ADD", container_id=CID, ifname="eth1")
BY_POOL = NetConf(cni_version="1.0.0", name="numanet-net", pool="vhostuser-ovs")
BY_RESOURCE = NetConf(cni_version="1.0.0", name="numanet-net", resource_name=RESOURCE)


@pytest.mark.parametrize("conf", [BY_POOL, BY_RESOURCE])
def test_the_pods_one_device_of_the_pool(conf: NetConf):
    held = {RESOURCE: {"vhostuser-ovs-n0-002"}, "other.io/x": {"x-1"}}
    assert device_of_pod(ctx_with(held, {}), REQ, conf, "default", "pod-a") == \
        "vhostuser-ovs-n0-002"


def test_a_device_attached_elsewhere_is_not_the_one():
    held = {RESOURCE: {"vhostuser-ovs-n0-002", "vhostuser-ovs-n0-003"}}
    # n0-002 is this pod's other network (net1); n0-003 is free
    ctx = ctx_with(held, {"vhostuser-ovs-n0-002": (CID, "net1")})
    assert device_of_pod(ctx, REQ, BY_POOL, "default", "pod-a") == "vhostuser-ovs-n0-003"
    # a retried ADD of this very attachment finds its device again
    ctx = ctx_with(held, {"vhostuser-ovs-n0-002": (CID, "eth1"),
                          "vhostuser-ovs-n0-003": (CID, "net1")})
    assert device_of_pod(ctx, REQ, BY_POOL, "default", "pod-a") == "vhostuser-ovs-n0-002"


@pytest.mark.parametrize(("held", "attached", "code", "word"), [
    (None, {}, errors.DEVICE_NOT_ALLOCATED, "no free device"),  # pod unknown to the kubelet
    ({"other.io/x": {"x-1"}}, {}, errors.DEVICE_NOT_ALLOCATED, "no free device"),
    ({RESOURCE: {"vhostuser-ovs-n0-002"}}, {"vhostuser-ovs-n0-002": ("c2", "eth1")},
     errors.DEVICE_NOT_ALLOCATED, "all attached"),
    ({RESOURCE: {"vhostuser-ovs-n0-002", "vhostuser-ovs-n0-003"}}, {},
     errors.INVALID_NETWORK_CONFIG, "name the device"),
    # what the kubelet answers is still checked before it names a file or a port
    ({RESOURCE: {"../../etc"}}, {}, errors.UNKNOWN_DEVICE, "etc"),
])
def test_anything_but_one_free_device_is_refused(held, attached, code, word):
    with pytest.raises(CniError) as err:
        device_of_pod(ctx_with(held, attached), REQ, BY_POOL, "default", "pod-a")
    assert err.value.code == code
    assert word in err.value.msg + " " + (err.value.details or "")


@pytest.mark.parametrize(("conf", "word"), [
    (NetConf(cni_version="1.0.0", name="n"), "pool"),
    (NetConf(cni_version="1.0.0", name="n", pool="nope"), "nope"),
])
def test_without_a_pool_there_is_nothing_to_ask(conf: NetConf, word: str):
    with pytest.raises(CniError) as err:
        device_of_pod(ctx_with({RESOURCE: {"vhostuser-ovs-n0-002"}}, {}), REQ, conf,
                      "default", "pod-a")
    assert err.value.code == errors.INVALID_NETWORK_CONFIG and word in err.value.msg
