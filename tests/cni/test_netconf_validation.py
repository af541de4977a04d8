"""The network configuration as ``cni.netconf`` checks it: strict types for the keys
numanet uses, every range one below, at and one above, unknown keys ignored (and logged
once per network), each refusal asserted here rather than where a later step repeats it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from cni import errors, netconf
from cni.errors import CniError
from cni.netconf import (
    MAX_CONFIG_BYTES,
    Attachment,
    NetConf,
    decode,
    ignored_keys,
    parse_netconf,
    read_document,
    version_of,
    version_tuple,
)

BASE = {"cniVersion": "1.1.0", "name": "net-a", "type": "numanet"}


def conf(**changes: Any) -> bytes:
    doc = dict(BASE)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc).encode()


def parse(command: str = "ADD", **changes: Any) -> NetConf:
    return parse_netconf(conf(**changes), command)


def refused(stdin: bytes, command: str = "ADD",
            code: int = errors.INVALID_NETWORK_CONFIG) -> CniError:
    with pytest.raises(CniError) as err:
        parse_netconf(stdin, command)
    assert err.value.code == code, err.value
    return err.value


def test_a_minimal_config() -> None:
    parsed = parse()
    assert parsed == NetConf(cni_version="1.1.0", name="net-a", raw=dict(BASE))
    assert parsed.valid_attachments is None


def test_every_field_numanet_uses() -> None:
    parsed = parse(pool="vhostuser-ovs", resourceName="numanet.io/vhostuser-ovs",
                   bridge="br-int", mtu=9000, vlan=100, deviceID="vhostuser-ovs-n0-000",
                   ipam={"type": "host-local"}, dns={"nameservers": ["10.0.0.1"]},
                   prevResult={"cniVersion": "1.1.0"},
                   runtimeConfig={"mac": "02:00:00:00:00:01",
                                  "CNIDeviceInfoFile": "/var/run/x.json"})
    assert (parsed.pool, parsed.resource_name, parsed.bridge, parsed.mtu, parsed.vlan) == \
        ("vhostuser-ovs", "numanet.io/vhostuser-ovs", "br-int", 9000, 100)
    assert parsed.device_id == "vhostuser-ovs-n0-000"
    assert parsed.ipam_type == "host-local"
    assert parsed.dns == {"nameservers": ["10.0.0.1"]}
    assert parsed.prev_result == {"cniVersion": "1.1.0"}
    assert parsed.mac == "02:00:00:00:00:01"
    assert parsed.device_info_file == "/var/run/x.json"


# --- size and JSON ------------------------------------------------------------------------

def _config_of_size(size: int) -> bytes:
    body = conf()
    padded = body[:-1] + b" " * (size - len(body)) + b"}"
    assert len(padded) == size
    return padded


@pytest.mark.parametrize("size", [MAX_CONFIG_BYTES - 1, MAX_CONFIG_BYTES])
def test_a_config_up_to_1_mib_is_read(size: int) -> None:
    assert MAX_CONFIG_BYTES == 1024 * 1024
    assert parse_netconf(_config_of_size(size), "ADD").name == "net-a"


def test_a_config_over_1_mib_is_refused_before_parsing() -> None:
    error = refused(_config_of_size(MAX_CONFIG_BYTES + 1), code=errors.DECODE_FAILURE)
    assert error.msg == f"network configuration is {MAX_CONFIG_BYTES + 1} bytes"


@pytest.mark.parametrize(("stdin", "message"), [
    (b'{"name": "\xff"}', "not UTF-8"),
    (b"{", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'"x"', "not a JSON object"),
])
def test_what_is_not_a_json_object_is_a_decode_failure(stdin: bytes, message: str) -> None:
    assert message in refused(stdin, code=errors.DECODE_FAILURE).msg
    with pytest.raises(CniError):
        decode(stdin)


# --- strict types -------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value", "wanted"), [
    ("mtu", True, "an integer"),  # bool is an int in Python: not here
    ("mtu", False, "an integer"),
    ("vlan", True, "an integer"),  # would be VLAN 1
    ("vlan", False, "an integer"),
    ("mtu", "9000", "an integer"),
    ("mtu", 9000.0, "an integer"),
    ("vlan", [100], "an integer"),
    ("name", 1, "a string"),
    ("pool", True, "a string"),
    ("bridge", 1, "a string"),
    ("resourceName", ["numanet.io/x"], "a string"),
    ("deviceID", 1, "a string"),
    ("ipam", "host-local", "an object"),
    ("args", [], "an object"),
    ("capabilities", "mac", "an object"),
    ("dns", [], "an object"),
    ("runtimeConfig", [], "an object"),
    ("prevResult", "x", "an object"),
    ("cniVersions", "1.1.0", "a list"),
    ("disableCheck", 1, "true or false"),
    ("disableGC", "true", "true or false"),
])
def test_keys_numanet_uses_have_strict_types(key: str, value: Any, wanted: str) -> None:
    error = refused(conf(**{key: value}))
    assert error.msg.startswith(f"{key} must be {wanted}, not {type(value).__name__}")
    assert error.details == f"write {key} as {wanted} in the network configuration"


@pytest.mark.parametrize("key", ["disableCheck", "disableGC"])
@pytest.mark.parametrize("value", [True, False])
def test_booleans_take_true_and_false(key: str, value: bool) -> None:
    assert parse(**{key: value}).raw[key] is value


@pytest.mark.parametrize(("key", "value"), [
    ("deviceID", 1), ("CNIDeviceInfoFile", {}), ("mac", 2)])
def test_runtime_config_keys_are_strings(key: str, value: Any) -> None:
    error = refused(conf(runtimeConfig={key: value}))
    assert error.msg.startswith(f"runtimeConfig.{key} must be a string")


def test_null_is_absent() -> None:
    parsed = parse_netconf(json.dumps({**BASE, "mtu": None, "vlan": None, "pool": None,
                                       "ipam": None}).encode(), "ADD")
    assert (parsed.mtu, parsed.vlan, parsed.pool, parsed.ipam_type) == (None, None, None, None)


# --- ranges -------------------------------------------------------------------------------

@pytest.mark.parametrize("mtu", [68, 69, 1500, 65534, 65535])
def test_mtu_in_range(mtu: int) -> None:
    assert parse(mtu=mtu).mtu == mtu


@pytest.mark.parametrize("mtu", [67, 65536, 0, -1])
def test_mtu_out_of_range(mtu: int) -> None:
    error = refused(conf(mtu=mtu))
    assert error.msg == f"mtu {mtu} is out of range"
    assert error.details == "use 68 to 65535"


@pytest.mark.parametrize("vlan", [1, 2, 4093, 4094])
def test_vlan_in_range(vlan: int) -> None:
    assert parse(vlan=vlan).vlan == vlan


@pytest.mark.parametrize("vlan", [0, 4095, -1])
def test_vlan_out_of_range(vlan: int) -> None:
    assert refused(conf(vlan=vlan)).msg == f"vlan {vlan} is out of range"


# --- names --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "A", "0", "a" * 253, "net_a.b-c"])
def test_network_names_accepted(name: str) -> None:
    assert parse(name=name).name == name


@pytest.mark.parametrize("name", [None, "", "a" * 254, "-a", "_a", ".a", "a/b", "a b"])
def test_network_names_refused(name: str | None) -> None:
    assert "is missing or not a valid network name" in refused(conf(name=name)).msg


@pytest.mark.parametrize("plugin_type", [None, "bridge", "Numanet", ""])
def test_the_type_must_be_numanet(plugin_type: str | None) -> None:
    assert refused(conf(type=plugin_type)).msg == \
        f"type is {plugin_type!r}, this plugin is 'numanet'"


@pytest.mark.parametrize("pool", ["a", "a" * 63, "vhostuser-ovs", "0-9"])
def test_pool_names_accepted(pool: str) -> None:
    assert parse(pool=pool).pool == pool


@pytest.mark.parametrize("pool", ["", "a" * 64, "Vhost", "-a", "a-", "a_b", "a.b", "../x"])
def test_pool_names_refused_by_netconf_itself(pool: str) -> None:
    """Refused here, before the service could say it knows no such pool."""
    error = refused(conf(pool=pool))
    assert error.msg == f"pool {pool[:80]!r} is not a pool name"


@pytest.mark.parametrize("resource", ["numanet.io/vhostuser-ovs", "a/b", "x.y-z/p-1",
                                      "a" * 253 + "/" + "b" * 63])
def test_resource_names_accepted(resource: str) -> None:
    assert parse(resourceName=resource).resource_name == resource


@pytest.mark.parametrize("resource", ["vhostuser-ovs", "numanet.io/", "/p", "a/b/c",
                                      "Numanet.io/p", "a/" + "b" * 64, "a" * 254 + "/b",
                                      "a/b_c"])
def test_resource_names_refused(resource: str) -> None:
    assert "is not <prefix>/<pool>" in refused(conf(resourceName=resource)).msg


@pytest.mark.parametrize("bridge", ["b", "b" * 15, "br-int", "br_0.1"])
def test_bridge_names_accepted(bridge: str) -> None:
    assert parse(bridge=bridge).bridge == bridge


@pytest.mark.parametrize("bridge", ["", "b" * 16, "-br", "br/0", "br 0"])
def test_bridge_names_refused(bridge: str) -> None:
    assert refused(conf(bridge=bridge)).msg == f"bridge {bridge!r} is not a bridge name"


@pytest.mark.parametrize("ipam", [{}, {"subnet": "10.0.0.0/24"}, {"type": ""},
                                  {"type": "../host-local"}, {"type": "h" * 65}])
def test_ipam_needs_a_plugin_name(ipam: dict[str, Any]) -> None:
    if not ipam:
        assert parse(ipam=ipam).ipam_type is None  # an empty ipam is no IPAM
        return
    assert "is missing or not a plugin name" in refused(conf(ipam=ipam)).msg


def test_ipam_type_of_64_characters_passes() -> None:
    assert parse(ipam={"type": "h" * 64}).ipam_type == "h" * 64


def test_cni_versions_must_be_strings() -> None:
    assert parse(cniVersions=["1.0.0", "1.1.0"]).cni_version == "1.1.0"
    assert refused(conf(cniVersions=["1.0.0", 1])).msg == "cniVersions must be a list of strings"


# --- versions -----------------------------------------------------------------------------

def test_cni_version_is_required_and_known() -> None:
    assert refused(conf(cniVersion=None)).msg == "cniVersion is missing"
    error = refused(conf(cniVersion="0.2.0"), code=errors.INCOMPATIBLE_VERSION)
    assert error.msg == "cniVersion '0.2.0' is not supported"
    refused(conf(cniVersion="1.2.0"), code=errors.INCOMPATIBLE_VERSION)


@pytest.mark.parametrize(("command", "oldest", "too_old"), [
    ("CHECK", "0.4.0", "0.3.1"),
    ("STATUS", "1.1.0", "1.0.0"),
    ("GC", "1.1.0", "1.0.0"),
])
def test_commands_need_their_cni_version(command: str, oldest: str, too_old: str) -> None:
    assert parse(command, cniVersion=oldest).cni_version == oldest
    error = refused(conf(cniVersion=too_old), command, code=errors.INCOMPATIBLE_VERSION)
    assert error.msg == f"{command} needs cniVersion {oldest} or later, the config says " \
                        f"{too_old}"


@pytest.mark.parametrize("version", netconf.SUPPORTED_VERSIONS)
def test_add_and_del_take_every_supported_version(version: str) -> None:
    assert parse("ADD", cniVersion=version).cni_version == version
    assert parse("DEL", cniVersion=version).cni_version == version


def test_version_tuple_and_best_effort_version() -> None:
    assert version_tuple("0.4.0") == (0, 4, 0)
    assert version_tuple("1.0.10") > version_tuple("1.0.9")
    assert version_of(read_document(conf(cniVersion="0.4.0"))) == "0.4.0"
    assert version_of(read_document(conf(cniVersion="9.9.9"))) == "1.1.0"
    assert version_of(read_document(b"[1]")) == "1.1.0"
    assert version_of(read_document(b"{")) == "1.1.0"
    assert version_of(read_document(b"\xff")) == "1.1.0"


# --- device ID, MAC, attachments ----------------------------------------------------------

def test_device_id_from_either_place_and_they_must_agree() -> None:
    assert parse(deviceID="d-n0-000").device_id == "d-n0-000"
    assert parse(runtimeConfig={"deviceID": "d-n0-001"}).device_id == "d-n0-001"
    assert parse(deviceID="d-n0-000", runtimeConfig={"deviceID": "d-n0-000"}).device_id == \
        "d-n0-000"
    error = refused(conf(deviceID="d-n0-000", runtimeConfig={"deviceID": "d-n0-001"}))
    assert error.msg == "deviceID 'd-n0-000' and runtimeConfig.deviceID 'd-n0-001' differ"
    # An empty one is no device ID, not a different one.
    assert parse(deviceID="", runtimeConfig={"deviceID": "d-n0-001"}).device_id == "d-n0-001"
    assert parse(deviceID="d-n0-000", runtimeConfig={"deviceID": ""}).device_id == "d-n0-000"


@pytest.mark.parametrize("mac", ["02:00:00:00:00", "02-00-00-00-00-01", "", "zz:00:00:00:00:01"])
def test_runtime_mac_must_be_a_mac(mac: str) -> None:
    assert "is not a MAC address" in refused(conf(runtimeConfig={"mac": mac})).msg


def test_valid_attachments_for_gc() -> None:
    items = [{"containerID": "c1", "ifname": "net1"}, {"containerID": "c2", "ifname": "eth0"}]
    expected = (Attachment("c1", "net1"), Attachment("c2", "eth0"))
    doc = {**BASE, "cni.dev/valid-attachments": items}
    assert parse_netconf(json.dumps(doc).encode(), "GC").valid_attachments == expected
    # The early 1.1 draft's name, and the current name winning when both are there.
    doc = {**BASE, "cni.dev/attachments": items}
    assert parse_netconf(json.dumps(doc).encode(), "GC").valid_attachments == expected
    doc = {**BASE, "cni.dev/attachments": [], "cni.dev/valid-attachments": items}
    assert parse_netconf(json.dumps(doc).encode(), "GC").valid_attachments == expected
    doc = {**BASE, "cni.dev/valid-attachments": []}
    assert parse_netconf(json.dumps(doc).encode(), "GC").valid_attachments == ()


@pytest.mark.parametrize("items", [
    {"containerID": "c1"}, "c1", [{"containerID": "c1"}], [{"ifname": "net1"}],
    [{"containerID": 1, "ifname": "net1"}], [{"containerID": "c1", "ifname": None}], ["c1"],
])
def test_malformed_attachments_are_refused(items: Any) -> None:
    doc = {**BASE, "cni.dev/valid-attachments": items}
    assert "cni.dev/valid-attachments" in refused(json.dumps(doc).encode(), "GC").msg


# --- unknown keys -------------------------------------------------------------------------

def test_unknown_keys_are_ignored_and_logged_once_per_network(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cni.netconf")
    extra = {"pciBusID": "0000:3b:02.0", "mtuu": 9000, "cni.dev/other": 1}
    for _ in range(2):
        parsed = parse_netconf(json.dumps({**BASE, "name": "ignore-a", **extra}).encode(), "ADD")
        assert parsed.mtu is None
        assert parsed.raw["pciBusID"] == "0000:3b:02.0"
    parse_netconf(json.dumps({**BASE, "name": "ignore-b", **extra}).encode(), "ADD")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        'network config field ignored network=ignore-a field=mtuu value=9000',
        'network config field ignored network=ignore-a field=pciBusID value="0000:3b:02.0"',
        'network config field ignored network=ignore-b field=mtuu value=9000',
        'network config field ignored network=ignore-b field=pciBusID value="0000:3b:02.0"',
    ]


def test_ignored_keys_are_the_unused_top_level_ones() -> None:
    doc = {**BASE, "pool": "p", "zeta": 1, "alpha": 2, "cni.dev/valid-attachments": []}
    assert ignored_keys(doc) == ["alpha", "zeta"]


def test_the_once_per_network_memory_is_bounded() -> None:
    seen = netconf._IgnoredKeys()
    seen.LIMIT = 2
    assert seen.first_time("n", "a") is True
    assert seen.first_time("n", "a") is False
    assert seen.first_time("n", "b") is True
    # Full: forgets everything, then remembers the new pair.
    assert seen.first_time("n", "c") is True
    assert seen.first_time("n", "a") is True
    assert seen.first_time("n", "c") is False
    assert seen.first_time("m", "a") is True


@pytest.mark.parametrize("items", [5, {}, "", {"containerID": "c1", "ifname": "net1"}])
def test_attachments_that_are_not_a_list_are_refused_as_such(items: Any) -> None:
    doc = {**BASE, "cni.dev/valid-attachments": items}
    assert refused(json.dumps(doc).encode(), "GC").msg == \
        "cni.dev/valid-attachments must be a list"


# --- messages quote a bad value, cut short ------------------------------------------------

@pytest.mark.parametrize(("changes", "message"), [
    ({"mtu": "9" * 100}, f"mtu must be an integer, not str {json.dumps('9' * 100)[:60]}"),
    ({"cniVersion": "9" * 30}, f"cniVersion {'9' * 20!r} is not supported"),
    ({"pool": "P" * 100}, f"pool {'P' * 80!r} is not a pool name"),
    ({"resourceName": "R" * 100}, f"resourceName {'R' * 80!r} is not <prefix>/<pool>"),
    ({"bridge": "B" * 100}, f"bridge {'B' * 80!r} is not a bridge name"),
    ({"runtimeConfig": {"mac": "M" * 50}}, f"runtimeConfig.mac {'M' * 40!r} is not a MAC "
                                           "address"),
])
def test_messages_quote_the_start_of_a_long_bad_value(changes: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(CniError) as err:
        parse_netconf(conf(**changes), "ADD")
    assert err.value.msg == message


def test_ignored_keys_are_logged_cut_short(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cni.netconf")
    key, value = "k" * 100, "v" * 100
    parse_netconf(json.dumps({**BASE, "name": "ignore-long", key: value}).encode(), "ADD")
    assert [r.getMessage() for r in caplog.records] == [
        f"network config field ignored network=ignore-long field={key[:64]} "
        f"value={json.dumps(value)[:64]}"]
