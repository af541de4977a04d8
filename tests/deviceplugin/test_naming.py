"""Every name and path ``deviceplugin.naming`` derives, and the device IDs it refuses, with
the 63-character device ID limit one below, at and one above."""

from __future__ import annotations

from pathlib import Path

import pytest

from deviceplugin import naming
from deviceplugin.naming import InvalidName


def slot_id_of_length(length: int) -> str:
    """A valid slot ID (``<pool>-n0-000``) exactly ``length`` characters long."""
    return "p" * (length - len("-n0-000")) + "-n0-000"


# --- device IDs ---------------------------------------------------------------------------

@pytest.mark.parametrize("length", [62, 63])
def test_slot_ids_up_to_63_characters(length: int) -> None:
    device_id = slot_id_of_length(length)
    assert naming.validate_device_id(device_id) == device_id
    pool = "p" * (length - len("-n0-000"))
    assert naming.slot_device_id(pool, 0, 0) == device_id
    assert naming.parse_slot_id(device_id) == (pool, 0, 0)


def test_a_64_character_slot_id_is_refused() -> None:
    device_id = slot_id_of_length(64)
    with pytest.raises(InvalidName) as err:
        naming.validate_device_id(device_id)
    assert str(err.value) == f"device ID {device_id!r} is longer than 63 characters"
    with pytest.raises(InvalidName) as err:
        naming.slot_device_id("p" * 57, 0, 0)
    assert str(err.value) == (f"device ID {device_id!r} is longer than 63 characters: "
                              f"shorten pool {'p' * 57!r}")


def test_a_long_device_id_is_quoted_cut_short() -> None:
    with pytest.raises(InvalidName) as err:
        naming.validate_device_id("x" * 200)
    assert str(err.value) == f"device ID {'x' * 80!r} is longer than 63 characters"


@pytest.mark.parametrize(("device_id", "numa", "index"), [
    ("vhostuser-ovs-n0-000", 0, 0), ("p-n1-007", 1, 7), ("p-n255-12345", 255, 12345),
    ("a-b-n12-100", 12, 100)])
def test_slot_ids_parse(device_id: str, numa: int, index: int) -> None:
    pool = device_id.rsplit("-n", 1)[0]
    assert naming.parse_slot_id(device_id) == (pool, numa, index)
    assert naming.slot_device_id(pool, numa, index) == device_id


@pytest.mark.parametrize("address", ["0000:3b:02.0", "ffff:ff:1f.7"])
def test_pci_addresses_are_device_ids_not_slot_ids(address: str) -> None:
    assert naming.is_pci_address(address)
    assert naming.validate_device_id(address) == address
    with pytest.raises(InvalidName, match="is not a slot ID"):
        naming.parse_slot_id(address)


@pytest.mark.parametrize("device_id", [
    "..", ".", "/", "../../etc", "p-n0-000/..", "p-n0-00", "p-n0-000000", "p-n1234-000",
    "P-n0-000", "-n0-000", "p-n0-000\n", "0000:3b:02.8", "0000:3B:02.0", "p_n0_000", " "])
def test_anything_else_is_refused(device_id: str) -> None:
    with pytest.raises(InvalidName) as err:
        naming.validate_device_id(device_id)
    assert str(err.value) == (
        f"device ID {device_id!r} is neither a numanet slot ID (<pool>-n<numa>-<index>) "
        "nor a PCI address (0000:00:00.0)")
    assert not naming.is_pci_address(device_id)


@pytest.mark.parametrize("device_id", ["", None, 5, b"p-n0-000", ["p-n0-000"]])
def test_empty_or_not_a_string_is_refused(device_id: object) -> None:
    with pytest.raises(InvalidName) as err:
        naming.validate_device_id(device_id)
    assert str(err.value) == f"device ID {device_id!r} is empty or not a string"


def test_indexes_are_at_least_three_digits() -> None:
    assert naming.slot_device_id("p", 3, 5) == "p-n3-005"
    assert naming.slot_device_id("p", 3, 1234) == "p-n3-1234"


# --- names and paths ----------------------------------------------------------------------

def test_derived_names() -> None:
    assert naming.resource_name("numanet.io", "vh") == "numanet.io/vh"
    assert naming.plugin_socket_name("vh") == "numanet-vh.sock"
    assert naming.pool_env_name("vhostuser-ovs") == "NUMANET_VHOSTUSER_OVS"
    assert naming.pool_numa_env_name("vhostuser-ovs") == "NUMANET_VHOSTUSER_OVS_NUMA"
    assert naming.pci_env_name("numanet.io", "dpdk-nic") == "PCIDEVICE_NUMANET_IO_DPDK_NIC"


def test_derived_paths() -> None:
    run = Path("/run/numanet")
    assert naming.slot_dir(run, "p-n0-000") == Path("/run/numanet/s/p-n0-000")
    assert naming.slot_dir("/x", "p-n0-000") == Path("/x/s/p-n0-000")
    assert naming.container_slot_dir("p", "p-n0-000") == Path("/run/numanet/p/p-n0-000")
    assert naming.cni_socket(run) == Path("/run/numanet/cni.sock")
    assert naming.cni_socket("/x") == Path("/x/cni.sock")
    assert naming.devinfo_path("numanet.io/vh", "vh-n0-000") == Path(
        "/var/run/k8s.cni.cncf.io/devinfo/dp/numanet.io-vh-vh-n0-000-device.json")
    assert naming.devinfo_path("numanet.io/nic", "0000:3b:02.0", "/d") == Path(
        "/d/numanet.io-nic-0000:3b:02.0-device.json")


@pytest.mark.parametrize("build", [
    lambda bad: naming.slot_dir(Path("/run/numanet"), bad),
    lambda bad: naming.container_slot_dir("p", bad),
    lambda bad: naming.devinfo_path("numanet.io/p", bad),
])
def test_paths_refuse_a_device_id_that_is_not_one(build) -> None:
    with pytest.raises(InvalidName):
        build("../../etc")


@pytest.mark.parametrize("prefix", ["numanet.io", "a", "a" * 253, "example.com", "a-b.c"])
def test_resource_prefixes_accepted(prefix: str) -> None:
    assert naming.validate_prefix(prefix) == prefix
    assert naming.is_dns_subdomain(prefix)


@pytest.mark.parametrize("prefix", ["", "a" * 254, "Numanet.io", "-a", "a-", "a/b", "a_b", 5])
def test_resource_prefixes_refused(prefix: object) -> None:
    with pytest.raises(InvalidName, match="is not a DNS subdomain"):
        naming.validate_prefix(prefix)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "label"), [
    ("a", True), ("a" * 63, True), ("a" * 64, False), ("a-b", True), ("-a", False),
    ("a-", False), ("A", False), ("a.b", False), ("", False)])
def test_dns_labels(name: str, label: bool) -> None:
    assert naming.is_dns_label(name) is label


@pytest.mark.parametrize("name", ["p", "vhostuser-ovs", "a" * 63])
def test_pool_names_from_outside_accepted(name: str) -> None:
    assert naming.validate_pool_name(name) == name


@pytest.mark.parametrize("name", ["", "a" * 64, "-p", "p-", "P", "p_q", "p/q", "..", 7])
def test_pool_names_from_outside_refused(name: object) -> None:
    """A claim names its DRA pool <node>/<pool>: the pool part reaches paths and names."""
    with pytest.raises(naming.InvalidName, match="not a DNS label"):
        naming.validate_pool_name(name)  # type: ignore[arg-type]
