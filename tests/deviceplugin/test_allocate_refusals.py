"""``deviceplugin.allocate.Allocator`` on its own (a stand-in resource manager, no gRPC):
every request it refuses and why, what one allocation writes, and what a failed one
leaves behind (nothing)."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from deviceplugin import cdi, naming
from deviceplugin.allocate import AllocateError, Allocator, AllocatorSettings, container_env
from deviceplugin.config import Config, HugepagesConfig, PoolConfig
from deviceplugin.slots import Slot
from deviceplugin.state import AllocationStore

PREFIX = naming.DEFAULT_PREFIX
PAGES = Path("/dev/hugepages-test")
CONFIG = Config(hugepages=HugepagesConfig(path=PAGES))


class Manager:
    """What Allocator reads from the resource manager, for a fixed set of slots."""

    def __init__(self, run_dir: Path, slots: list[Slot], config: Config | None) -> None:
        self.allocations = AllocationStore(run_dir)
        self.config = config
        self.slots = {s.device_id: s for s in slots}
        self.notified: list[str] = []

    def pool(self, name: str):
        devices = tuple(SimpleNamespace(slot=s, device_id=s.device_id)
                        for s in self.slots.values() if s.pool == name)
        if not devices:
            return None
        return SimpleNamespace(resource=devices[0].slot.resource, devices=devices,
                               by_id={d.device_id: d for d in devices})

    def device(self, device_id: str):
        slot = self.slots.get(device_id)
        return SimpleNamespace(slot=slot, device_id=device_id) if slot else None

    def notify_allocation(self, pool: str) -> None:
        self.notified.append(pool)


def socket_slot(run_dir: Path, index: int, node: int = 0, pool: str = "vh") -> Slot:
    device_id = naming.slot_device_id(pool, node, index)
    return Slot(device_id=device_id, pool=pool, resource=naming.resource_name(PREFIX, pool),
                kind="vhost-user", numa_node=node, index=index, vswitch="ovs",
                container_role="server", host_dir=naming.slot_dir(run_dir, device_id),
                container_dir=naming.container_slot_dir(pool, device_id))


def nic_slot(address: str, group: str | None, node: int | None = 0,
             pci_address: str | None = "same") -> Slot:
    return Slot(device_id=address, pool="nic", resource=naming.resource_name(PREFIX, "nic"),
                kind="dpdk-nic", numa_node=node,
                pci_address=address if pci_address == "same" else pci_address,
                iommu_group=group)


class Bed:
    def __init__(self, tmp_path: Path, slots: list[Slot] | None = None,
                 config: Config | None = CONFIG,
                 cdi_dir: Path | None = None) -> None:
        self.run_dir = tmp_path / "run"  # does not exist yet: the first Allocate makes it
        self.devinfo = tmp_path / "devinfo"
        self.vfio = tmp_path / "vfio"
        self.slots = slots if slots is not None else [
            socket_slot(self.run_dir, 0), socket_slot(self.run_dir, 1, node=1),
            nic_slot("0000:3b:02.0", "32"), nic_slot("0000:3b:02.1", "32"),
            nic_slot("0000:3b:02.2", "33", node=None),
            nic_slot("0000:3b:02.3", ".."), nic_slot("0000:3b:02.4", None),
        ]
        self.manager = Manager(self.run_dir, self.slots, config)
        self.allocator = Allocator(
            AllocatorSettings(run_dir=self.run_dir, devinfo_dir=self.devinfo, cdi_dir=cdi_dir,
                              vfio_dir=self.vfio),
            self.manager)  # type: ignore[arg-type]

    def refused(self, pool: str, ids: list[str]) -> AllocateError:
        with pytest.raises(AllocateError) as err:
            self.allocator.allocate(pool, ids)
        return err.value

    def nothing_left(self) -> None:
        assert not self.devinfo.exists() or not any(self.devinfo.iterdir())
        assert self.manager.allocations.all() == {}
        assert self.manager.notified == []


@pytest.fixture
def bed(tmp_path: Path) -> Bed:
    return Bed(tmp_path)


# --- refusals -----------------------------------------------------------------------------

def test_a_pool_that_is_gone(bed: Bed) -> None:
    error = bed.refused("gone", ["vh-n0-000"])
    assert str(error) == "pool gone is not configured any more"
    assert error.invalid_argument is True
    bed.nothing_left()


def test_every_unknown_id_is_named(bed: Bed) -> None:
    long = "x" * 100
    error = bed.refused("vh", ["../x", "vh-n0-000", "vh-n7-000", long, "0000:3b:02.0"])
    assert str(error) == (
        f"unknown device IDs for resource numanet.io/vh: '../x', vh-n7-000, "
        f"{repr(long)[:80]}, 0000:3b:02.0; numanet advertises 2 devices in pool vh "
        "(see ListAndWatch or `numanet status`)")
    assert error.invalid_argument is True
    bed.nothing_left()
    assert not bed.run_dir.exists()


def test_an_empty_request(bed: Bed) -> None:
    error = bed.refused("vh", [])
    assert str(error) == "no device IDs in the request"
    assert error.invalid_argument is True


def test_the_same_device_twice_in_one_request_is_refused(bed: Bed) -> None:
    error = bed.refused("vh", ["vh-n0-000", "vh-n1-001", "vh-n0-000"])
    assert str(error) == "a device ID appears twice in one container request"
    assert error.invalid_argument is True
    bed.nothing_left()
    assert not bed.run_dir.exists()


@pytest.mark.parametrize("group", ["..", ".", "1a", "-1", "²", "1/../2", " 1", "0x20", "３"])
def test_an_iommu_group_that_is_not_a_number_never_reaches_a_dev_path(tmp_path: Path,
                                                                      group: str) -> None:
    bed = Bed(tmp_path, [nic_slot("0000:3b:02.3", group)])
    error = bed.refused("nic", ["0000:3b:02.3"])
    assert str(error) == f"IOMMU group {group!r} is not a number"
    assert error.invalid_argument is False
    bed.nothing_left()


@pytest.mark.parametrize("group", [None, ""])
def test_a_nic_without_an_iommu_group(tmp_path: Path, group: str | None) -> None:
    bed = Bed(tmp_path, [nic_slot("0000:3b:02.4", group)])
    assert str(bed.refused("nic", ["0000:3b:02.4"])) == \
        "NIC 0000:3b:02.4 has no IOMMU group: bind it to vfio-pci with the IOMMU enabled"
    bed.nothing_left()


def test_a_failed_request_takes_back_what_it_wrote(bed: Bed) -> None:
    error = bed.refused("nic", ["0000:3b:02.0", "0000:3b:02.3"])
    # The refusal as it was, not wrapped as a file problem.
    assert str(error) == "IOMMU group '..' is not a number"
    bed.nothing_left()


def test_a_file_problem_names_the_devices(bed: Bed) -> None:
    bed.devinfo.parent.mkdir(parents=True, exist_ok=True)
    bed.devinfo.write_text("a file where the device-info directory goes")
    error = bed.refused("vh", ["vh-n0-000", "vh-n1-001"])
    assert str(error).startswith("cannot prepare devices vh-n0-000, vh-n1-001: ")
    assert error.invalid_argument is False
    assert bed.manager.allocations.all() == {}


def test_a_file_in_place_of_a_slot_directory_is_refused(bed: Bed) -> None:
    slot_dir = naming.slot_dir(bed.run_dir, "vh-n0-000")
    slot_dir.parent.mkdir(parents=True)
    slot_dir.write_text("not a directory")
    error = bed.refused("vh", ["vh-n0-000"])
    assert str(error).startswith("cannot prepare devices vh-n0-000: [Errno 20] Not a directory")
    assert stat.S_IMODE(slot_dir.stat().st_mode) != 0o750  # left as it was
    bed.nothing_left()


def test_no_configuration_yet(tmp_path: Path) -> None:
    bed = Bed(tmp_path, config=None)
    assert str(bed.refused("vh", ["vh-n0-000"])) == "the agent has no configuration yet"


# --- what an allocation gives -------------------------------------------------------------

def test_socket_slots(bed: Bed) -> None:
    answer = bed.allocator.allocate("vh", ["vh-n1-001", "vh-n0-000"])
    assert [(m.container_path, m.host_path) for m in answer.mounts] == [
        ("/run/numanet/vh/vh-n1-001", str(bed.run_dir / "s" / "vh-n1-001")),
        (str(PAGES), str(PAGES)),
        ("/run/numanet/vh/vh-n0-000", str(bed.run_dir / "s" / "vh-n0-000")),
    ]
    assert not answer.devices
    assert dict(answer.envs) == {"NUMANET_VH": "vh-n1-001,vh-n0-000", "NUMANET_VH_NUMA": "0,1"}
    # The run directory did not exist: made, with <run>/s traversable only.
    assert stat.S_IMODE(os.stat(bed.run_dir / "s").st_mode) == 0o711
    for device_id in ("vh-n0-000", "vh-n1-001"):
        assert stat.S_IMODE(os.stat(bed.run_dir / "s" / device_id).st_mode) == 0o750
        assert naming.devinfo_path("numanet.io/vh", device_id, bed.devinfo).is_file()
    assert sorted(bed.manager.allocations.all()) == ["vh-n0-000", "vh-n1-001"]
    assert bed.manager.notified == ["vh"]


def test_nics_share_device_nodes(bed: Bed) -> None:
    answer = bed.allocator.allocate("nic", ["0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2"])
    assert [(d.container_path, d.host_path, d.permissions) for d in answer.devices] == [
        ("/dev/vfio/vfio", str(bed.vfio / "vfio"), "rw"),
        ("/dev/vfio/32", str(bed.vfio / "32"), "rw"),
        ("/dev/vfio/33", str(bed.vfio / "33"), "rw"),
    ]
    assert [m.container_path for m in answer.mounts] == [str(PAGES)]
    assert answer.envs["PCIDEVICE_NUMANET_IO_NIC"] == "0000:3b:02.0,0000:3b:02.1,0000:3b:02.2"
    assert answer.envs["NUMANET_NIC_NUMA"] == "0"  # the third NIC's node is unknown
    assert not (bed.run_dir / "s").exists()  # NICs have no slot directory


def test_cdi_mode_names_devices_and_writes_specs(tmp_path: Path) -> None:
    bed = Bed(tmp_path, cdi_dir=tmp_path / "cdi")
    answer = bed.allocator.allocate("nic", ["0000:3b:02.0"])
    assert [d.name for d in answer.cdi_devices] == [cdi.cdi_device_name(PREFIX, "0000:3b:02.0")]
    assert not answer.devices and not answer.mounts
    assert cdi.spec_path(tmp_path / "cdi", PREFIX, "0000:3b:02.0").is_file()


@pytest.mark.parametrize("group", ["0", "32", "007"])
def test_iommu_groups_that_are_numbers(tmp_path: Path, group: str) -> None:
    bed = Bed(tmp_path, [nic_slot("0000:3b:02.0", group)])
    answer = bed.allocator.allocate("nic", ["0000:3b:02.0"])
    assert answer.devices[1].container_path == f"/dev/vfio/{group}"


def test_container_env() -> None:
    nic = nic_slot("0000:3b:02.0", "1", node=None, pci_address=None)
    assert container_env("numanet.io", "nic", [nic]) == {
        "NUMANET_NIC": "0000:3b:02.0", "PCIDEVICE_NUMANET_IO_NIC": "0000:3b:02.0"}
    vf = nic_slot("0000:3b:02.1", "1", node=1, pci_address="0000:3b:02.1")
    assert container_env("numanet.io", "nic", [vf, nic])["PCIDEVICE_NUMANET_IO_NIC"] == \
        "0000:3b:02.1,0000:3b:02.0"
    socket = socket_slot(Path("/run"), 0, node=2)
    assert container_env("numanet.io", "vh", [socket]) == {
        "NUMANET_VH": "vh-n2-000", "NUMANET_VH_NUMA": "2"}
    assert container_env("numanet.io", "vh", []) == {"NUMANET_VH": ""}


# --- after the answer: listeners, restore, release, cleanup -------------------------------

def test_listeners_hear_of_allocations_and_one_failing_does_not_silence_others(
        bed: Bed, caplog: pytest.LogCaptureFixture) -> None:
    heard: list[list[str]] = []

    def broken(slots: list[Slot]) -> None:
        raise RuntimeError("listener bug")

    bed.allocator.on_allocated(broken)
    bed.allocator.on_allocated(lambda slots: heard.append([s.device_id for s in slots]))
    bed.allocator.announce("vh", ["vh-n0-000"])
    assert heard == [["vh-n0-000"]]
    assert "allocation listener failed" in caplog.text
    caplog.clear()
    # A pool that changed meanwhile: nothing to tell, and no error either.
    bed.allocator.announce("gone", ["vh-n0-000"])
    bed.allocator.announce("vh", ["vh-n9-000"])
    assert heard == [["vh-n0-000"]]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_restore_rewrites_what_it_can_and_counts_it(tmp_path: Path) -> None:
    bed = Bed(tmp_path, cdi_dir=tmp_path / "cdi")
    records = bed.manager.allocations
    records.record("vh-n5-000", "vh", "numanet.io/vh", 5)  # a device no longer advertised
    records.record("vh-n0-000", "vh", "numanet.io/vh", 0)
    records.record("0000:3b:02.3", "nic", "numanet.io/nic", 0)  # its CDI spec cannot be made
    records.record("vh-n1-001", "vh", "numanet.io/vh", 1)
    assert bed.allocator.restore() == 2
    assert naming.devinfo_path("numanet.io/vh", "vh-n0-000", bed.devinfo).is_file()
    assert naming.devinfo_path("numanet.io/vh", "vh-n1-001", bed.devinfo).is_file()
    assert cdi.spec_path(tmp_path / "cdi", PREFIX, "vh-n1-001").is_file()
    # cleanup removes the device-info files written, the CDI specs stay.
    assert bed.allocator.cleanup() == 2
    assert not naming.devinfo_path("numanet.io/vh", "vh-n0-000", bed.devinfo).exists()
    assert cdi.spec_path(tmp_path / "cdi", PREFIX, "vh-n1-001").is_file()


def test_restore_without_configuration_restores_nothing(tmp_path: Path) -> None:
    bed = Bed(tmp_path, config=None)
    bed.manager.allocations.record("vh-n0-000", "vh", "numanet.io/vh", 0)
    assert bed.allocator.restore() == 0
    assert Bed(tmp_path / "other").allocator.restore() == 0


def test_release(tmp_path: Path) -> None:
    bed = Bed(tmp_path, cdi_dir=tmp_path / "cdi")
    bed.allocator.allocate("vh", ["vh-n0-000"])
    record = bed.manager.allocations.get("vh-n0-000")
    assert record is not None
    stale = dataclasses.replace(record, numa_node=7)
    assert bed.allocator.release("vh-n0-000", expected=stale) is False
    assert bed.allocator.all() == {"vh-n0-000": record}
    assert bed.allocator.release("vh-n0-000", expected=record) is True
    assert bed.allocator.all() == {}
    assert not naming.devinfo_path("numanet.io/vh", "vh-n0-000", bed.devinfo).exists()
    assert not cdi.spec_path(tmp_path / "cdi", PREFIX, "vh-n0-000").exists()
    assert bed.run_dir.joinpath("s", "vh-n0-000").is_dir()  # kept for the next Allocate
    assert bed.allocator.release("vh-n0-000") is False
    assert bed.manager.notified == ["vh", "vh"]
    assert bed.allocator.cleanup() == 0


# --- DRA pools and CDI; slot directories as they are made ---------------------------------

DRA_CONFIG = Config(hugepages=HugepagesConfig(path=PAGES), pools=(
    PoolConfig(name="vh", kind="vhost-user", vswitch="ovs", mode="server", frontend="dra"),
    PoolConfig(name="nic", kind="dpdk-nic"),
))


def test_a_dra_pool_gets_no_per_slot_cdi_spec(tmp_path: Path) -> None:
    """A claim carries its own CDI spec (dra/prepare.py): --cdi-dir is for the other pools."""
    cdi_dir = tmp_path / "cdi"
    bed = Bed(tmp_path, config=DRA_CONFIG, cdi_dir=cdi_dir)
    grant = bed.allocator.grant("vh", ["vh-n0-000"])
    assert grant.cdi_prefix is None
    assert [m.host_path for m in grant.edits[0].mounts] == [
        str(bed.run_dir / "s" / "vh-n0-000"), str(PAGES)]
    assert not cdi.spec_path(cdi_dir, PREFIX, "vh-n0-000").exists()
    nic = bed.allocator.grant("nic", ["0000:3b:02.0"])  # a device-plugin pool: specs written
    assert nic.cdi_prefix == PREFIX
    assert cdi.spec_path(cdi_dir, PREFIX, "0000:3b:02.0").is_file()
    # restore and release leave the DRA pool's CDI directory alone too.
    assert bed.allocator.restore() == 2
    assert not cdi.spec_path(cdi_dir, PREFIX, "vh-n0-000").exists()
    assert sorted(p.name for p in cdi_dir.iterdir()) == \
        [cdi.spec_path(cdi_dir, PREFIX, "0000:3b:02.0").name]
    assert bed.allocator.release("vh-n0-000") is True
    assert bed.allocator.release("0000:3b:02.0") is True
    assert not any(cdi_dir.iterdir())


def test_a_release_without_configuration_still_forgets_the_allocation(tmp_path: Path) -> None:
    bed = Bed(tmp_path, cdi_dir=tmp_path / "cdi")
    bed.allocator.allocate("vh", ["vh-n0-000"])
    bed.manager.config = None
    assert bed.allocator.release("vh-n0-000") is True
    assert bed.allocator.all() == {}
    assert not naming.devinfo_path("numanet.io/vh", "vh-n0-000", bed.devinfo).exists()


@pytest.mark.parametrize("run_dir_exists", [False, True])
def test_a_slot_directory_is_never_open_to_others_even_before_its_mode_is_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_dir_exists: bool) -> None:
    """Made 0700, then opened up for the group: no moment in which others may enter."""
    bed = Bed(tmp_path)
    if run_dir_exists:
        (bed.run_dir / "s").mkdir(parents=True)
    seen: list[int] = []
    fchmod = os.fchmod

    def record(fd: int, mode: int) -> None:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):  # not the device-info files
            seen.append(stat.S_IMODE(info.st_mode))
        fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", record)
    umask = os.umask(0)  # the mode numanet asks for, not what the umask leaves of it
    try:
        bed.allocator.allocate("vh", ["vh-n0-000", "vh-n1-001"])
    finally:
        os.umask(umask)
    assert seen == [0o700, 0o700]
    assert stat.S_IMODE(os.stat(bed.run_dir / "s" / "vh-n0-000").st_mode) == 0o750
