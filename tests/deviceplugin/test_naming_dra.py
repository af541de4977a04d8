"""The names ``deviceplugin.naming`` gives devices and pools in ResourceSlices (DRA), and
their reverse for what comes back in claims and from the kubelet: every name numanet
publishes maps back to its device, anything else is refused as a DRA device name."""

from __future__ import annotations

import pytest

from deviceplugin import naming
from deviceplugin.naming import InvalidName

SLOT_IDS = ["vhostuser-ovs-n0-000", "p-n1-007", "p-n255-12345", "a-b-n12-100",
            "p" * 56 + "-n0-000"]  # 63 characters
PCI = [("0000:3b:00.1", "pci-0000-3b-00-1"), ("abcd:3b:0f.7", "pci-abcd-3b-0f-7"),
       ("ffff:ff:1f.0", "pci-ffff-ff-1f-0"), ("0000:00:00.0", "pci-0000-00-00-0")]


@pytest.mark.parametrize("device_id", SLOT_IDS)
def test_a_slot_keeps_its_id(device_id: str) -> None:
    assert naming.dra_device_name(device_id) == device_id
    assert naming.device_id_of_dra_name(device_id) == device_id


@pytest.mark.parametrize(("address", "name"), PCI)
def test_a_pci_address_becomes_a_dns_label_and_back(address: str, name: str) -> None:
    assert naming.dra_device_name(address) == name
    assert naming.is_dns_label(name)
    assert naming.device_id_of_dra_name(name) == address


@pytest.mark.parametrize("device_id", ["..", "../../etc", "P-n0-000", "0000:3B:00.1",
                                       "p" * 57 + "-n0-000", ""])
def test_only_device_ids_get_a_dra_name(device_id: str) -> None:
    with pytest.raises(InvalidName):
        naming.dra_device_name(device_id)


@pytest.mark.parametrize("name", [
    "0000:3b:00.1",  # the address itself: numanet publishes pci-..., never this
    "pci-0000-3B-00-1", "pci-0000:3b:00.1", "Vh-n0-000", "vh_n0_000", "-vh-n0-000",
    "vh-n0-000-", "p" * 57 + "-n0-000", "", "../x", "vh-n0-000/..",
])
def test_names_that_are_no_dns_label_are_refused_as_dra_names(name: str) -> None:
    with pytest.raises(InvalidName) as err:
        naming.device_id_of_dra_name(name)
    assert str(err.value) == f"DRA device name {name!r} is not one numanet publishes"


@pytest.mark.parametrize("name", ["pci-0000-3b-00-8", "pci-000-3b-00-1", "pci-0000-3b-00-1-x",
                                  "gpu-0", "vh-n0-00", "vh-n1234-000"])
def test_dns_labels_that_are_no_device_id_are_refused(name: str) -> None:
    """Another driver's devices, as the kubelet lists them beside numanet's."""
    with pytest.raises(InvalidName, match="neither a numanet slot ID"):
        naming.device_id_of_dra_name(name)


@pytest.mark.parametrize("name", [None, 5, b"vh-n0-000", ["vh-n0-000"]])
def test_a_dra_device_name_that_is_not_a_string_is_refused(name: object) -> None:
    with pytest.raises(InvalidName) as err:
        naming.device_id_of_dra_name(name)  # type: ignore[arg-type]
    assert "is not a string" in str(err.value)


@pytest.mark.parametrize(("node", "pool"), [("worker-1", "vhostuser-ovs"),
                                            ("node.example.com", "p"), ("n", "a" * 63)])
def test_dra_pool_names_and_back(node: str, pool: str) -> None:
    dra_pool = naming.dra_pool_name(node, pool)
    assert dra_pool == f"{node}/{pool}"
    assert naming.pool_of_dra_pool(dra_pool) == pool


def test_the_pool_is_what_follows_the_last_slash() -> None:
    """Node names hold no '/'; a name without one is taken as the pool itself."""
    assert naming.pool_of_dra_pool("vhostuser-ovs") == "vhostuser-ovs"
    assert naming.pool_of_dra_pool("a/b/vh") == "vh"
    assert naming.pool_of_dra_pool("worker-1/") == ""


@pytest.mark.parametrize("pool", ["P", "a" * 64, "a/b", ""])
def test_a_dra_pool_name_needs_a_pool_name(pool: str) -> None:
    with pytest.raises(InvalidName):
        naming.dra_pool_name("worker-1", pool)
