"""A slot's socket paths: ``sock`` in its host and container directories, none for a NIC.

mutmut does not mutate these (decorated functions): ``make mutate`` reports slots.py with
no mutants, so these lines pin them."""

from __future__ import annotations

from pathlib import Path

from deviceplugin.slots import Slot


def test_socket_slots_have_a_socket_in_each_directory() -> None:
    slot = Slot(device_id="vh-n0-000", pool="vh", resource="numanet.io/vh", kind="vhost-user",
                numa_node=0, host_dir=Path("/run/numanet/s/vh-n0-000"),
                container_dir=Path("/run/numanet/vh/vh-n0-000"))
    assert slot.host_socket == Path("/run/numanet/s/vh-n0-000/sock")
    assert slot.container_socket == Path("/run/numanet/vh/vh-n0-000/sock")


def test_nics_have_no_socket() -> None:
    nic = Slot(device_id="0000:3b:02.0", pool="nic", resource="numanet.io/nic",
               kind="dpdk-nic", numa_node=None, pci_address="0000:3b:02.0")
    assert nic.host_socket is None
    assert nic.container_socket is None
