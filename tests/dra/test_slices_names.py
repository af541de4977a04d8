"""The ResourceSlice builder's pure parts on their own: a slice's object name (a DNS
subdomain of at most 253 characters, stable, distinct per node, pool and index) and a
device's attributes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from deviceplugin.slots import Slot
from dra.slices import (
    ATTR_DEVICE_ID,
    ATTR_NUMA_NODE,
    ATTR_PCI_BUS_ID,
    ATTR_PCIE_ROOT,
    ATTR_RESOURCE_NAME,
    device_attributes,
    slice_name,
)

DRIVER = "numanet.io"
POOL = "vhostuser-ovs"
# As the API server checks metadata.name (demo/apiserver_standin.py does the same).
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def node_for(length: int, index: int = 0) -> str:
    """A node name that makes the plain slice name exactly ``length`` characters."""
    rest = len(f"-{DRIVER}-{POOL}-{index}")
    return "n" * (length - rest)


def valid(name: str) -> bool:
    return len(name) <= 253 and bool(DNS_SUBDOMAIN.fullmatch(name))


# --- slice names ------------------------------------------------------------------------

def test_a_short_name_is_node_driver_pool_index() -> None:
    assert slice_name("worker-1", DRIVER, POOL, 0) == "worker-1-numanet.io-vhostuser-ovs-0"
    assert slice_name("worker-1", DRIVER, POOL, 12) == "worker-1-numanet.io-vhostuser-ovs-12"


@pytest.mark.parametrize("length", [252, 253])
def test_a_name_of_up_to_253_characters_is_kept(length: int) -> None:
    node = node_for(length)
    name = slice_name(node, DRIVER, POOL, 0)
    assert name == f"{node}-{DRIVER}-{POOL}-0"
    assert len(name) == length and valid(name)


@pytest.mark.parametrize(("length", "index"), [(254, 0), (254, 7), (260, 3), (254, 12),
                                               (300, 123), (400, 0)])
def test_a_longer_name_is_cut_to_253_with_a_digest_and_keeps_its_index(length: int,
                                                                       index: int) -> None:
    node = node_for(length, index)
    full = f"{node}-{DRIVER}-{POOL}-{index}"
    assert len(full) == length
    name = slice_name(node, DRIVER, POOL, index)
    assert len(name) == 253 and valid(name)
    head, digest, tail = name.rsplit("-", 2)
    assert tail == str(index)
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert full.startswith(head)
    # Stable: the publisher finds and replaces its slices by these names across restarts.
    assert digest == hashlib.sha256(full.encode()).hexdigest()[:16]
    assert slice_name(node, DRIVER, POOL, index) == name


def test_long_names_that_share_their_start_stay_distinct() -> None:
    node = "n" * 300
    names = {slice_name(node + suffix, DRIVER, pool, index)
             for suffix in ("", "a", "b") for pool in ("p", "q") for index in (0, 1)}
    assert len(names) == 12
    assert all(valid(name) for name in names)


@pytest.mark.parametrize("cut_at", range(225, 240))
def test_a_cut_never_leaves_a_dot_before_the_digest(cut_at: int) -> None:
    """Node names are DNS subdomains: the cut may fall just after one of their dots."""
    node = "a" * cut_at + "." + "b" * 30
    for index in (0, 9, 10, 127):
        name = slice_name(node, DRIVER, POOL, index)
        assert valid(name), name
        assert name.endswith(f"-{index}") and len(name) <= 253


# --- device attributes --------------------------------------------------------------------

def nic(**changes) -> Slot:
    fields = {"device_id": "0000:3b:02.1", "pool": "nic", "resource": "numanet.io/nic",
              "kind": "dpdk-nic", "numa_node": 1, "pci_address": "0000:3b:02.1",
              "pcie_root": "pci0000:3a"}
    return Slot(**{**fields, **changes})


def test_a_nic_names_its_pci_address_and_root() -> None:
    assert device_attributes(nic(), DRIVER) == {
        ATTR_NUMA_NODE: {"int": 1},
        ATTR_PCI_BUS_ID: {"string": "0000:3b:02.1"},
        ATTR_PCIE_ROOT: {"string": "pci0000:3a"},
        ATTR_RESOURCE_NAME: {"string": "numanet.io/nic"},
        ATTR_DEVICE_ID: {"string": "0000:3b:02.1"},
        "numanet.io/kind": {"string": "dpdk-nic"},
    }


def test_a_nic_without_a_pci_address_of_its_own_gives_its_device_id() -> None:
    attributes = device_attributes(nic(pci_address=None), DRIVER)
    assert attributes[ATTR_PCI_BUS_ID] == {"string": "0000:3b:02.1"}
    attributes = device_attributes(nic(pci_address="0000:3b:02.2"), DRIVER)
    assert attributes[ATTR_PCI_BUS_ID] == {"string": "0000:3b:02.2"}


def test_a_nic_without_numa_node_or_root() -> None:
    attributes = device_attributes(nic(numa_node=None, pcie_root=None), DRIVER)
    assert ATTR_NUMA_NODE not in attributes and ATTR_PCIE_ROOT not in attributes
    assert device_attributes(nic(numa_node=0), DRIVER)[ATTR_NUMA_NODE] == {"int": 0}


def test_a_socket_slot_has_no_pci_attributes() -> None:
    slot = Slot(device_id="vh-n0-000", pool="vh", resource="numanet.io/vh", kind="vhost-user",
                numa_node=0, vswitch="ovs", container_role="client",
                host_dir=Path("/run/numanet/s/vh-n0-000"),
                container_dir=Path("/run/numanet/vh/vh-n0-000"), pci_address="0000:3b:02.1")
    assert device_attributes(slot, "example.com") == {
        ATTR_NUMA_NODE: {"int": 0},
        ATTR_RESOURCE_NAME: {"string": "numanet.io/vh"},
        ATTR_DEVICE_ID: {"string": "vh-n0-000"},
        "example.com/kind": {"string": "vhost-user"},
        "example.com/vswitch": {"string": "ovs"},
        "example.com/mode": {"string": "client"},
    }
