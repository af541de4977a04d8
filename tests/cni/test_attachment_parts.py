"""The small decisions behind an attachment, on real records and real files: the vSwitch
side's address of an ip-mode memif, whose port a record may remove, and the rewrite of
numanet.json after a replay."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cni import errors
from cni.container_config import ContainerView, refresh_container_config, write_container_config
from cni.errors import CniError
from cni.lookups import owner_allows, owner_matches, vswitch_address
from cni.result import IpamResult, IpConfig
from deviceplugin import naming
from deviceplugin.slots import Slot
from vswitch.api import Owner, PluggedPort

WHAT = "device_id=mf-n0-000 pod=default/pod-a container=c1 ifname=net1"


# -- the vSwitch side of an ip-mode memif ---------------------------------------------------


def test_vswitch_address_is_the_gateway_with_the_containers_prefix():
    ipam = IpamResult(ips=(IpConfig("10.56.0.7/24", "10.56.0.1"),))
    own, vswitch = vswitch_address(ipam, WHAT)
    assert own.address == "10.56.0.7/24" and vswitch == "10.56.0.1/24"
    v6 = IpamResult(ips=(IpConfig("fd00:56::9/64", "fd00:56::1"),))
    assert vswitch_address(v6, WHAT)[1] == "fd00:56::1/64"


def test_vswitch_address_takes_the_first_ip_with_a_usable_gateway():
    ipam = IpamResult(ips=(IpConfig("10.56.1.7/24"),  # no gateway
                           IpConfig("10.56.2.7/24", "10.99.0.1"),  # not on its subnet
                           IpConfig("fd00:56::9/64", "fd00:56::1")))
    own, vswitch = vswitch_address(ipam, WHAT)
    assert own.address == "fd00:56::9/64" and vswitch == "fd00:56::1/64"


@pytest.mark.parametrize("ips", [
    (IpConfig("10.56.0.7/24"),),
    (IpConfig("10.56.0.7/24", "10.57.0.1"),),
    (IpConfig("10.56.0.7/24", "10.56.0.7"),),  # the container's own address
    (),
])
def test_vswitch_address_without_a_usable_gateway_says_what_to_set(ips):
    with pytest.raises(CniError) as caught:
        vswitch_address(IpamResult(ips=ips), WHAT)
    assert caught.value.code == errors.INVALID_NETWORK_CONFIG
    assert WHAT in caught.value.msg and "gateway" in caught.value.details


# -- whose port a record may remove ---------------------------------------------------------


def _port(owner: Owner) -> PluggedPort:
    return PluggedPort("mf-n0-000", "memif1000/0", "memif", "/run/numanet/s/mf-n0-000/sock",
                       "net", owner)


def test_an_unknown_owner_does_not_contradict_the_record_a_known_other_one_does():
    unknown = _port(Owner())
    assert owner_allows(unknown, "c1", "net1")
    assert not owner_matches(unknown, "c1", "net1")  # without a record: not ours to take
    assert owner_allows(_port(Owner("default", "pod-a", "c1", "net1")), "c1", "net1")
    assert not owner_allows(_port(Owner("default", "pod-b", "c2", "net1")), "c1", "net1")
    assert not owner_allows(_port(Owner("", "", "c1", "net2")), "c1", "net1")


# -- numanet.json after a replay ---------------------------------------------------------------


def _slot(run_dir: Path, kind: str = "memif") -> Slot:
    device_id = naming.slot_device_id("mf", 0, 0)
    slot = Slot(device_id, "mf", "numanet.io/mf", kind, 0, vswitch="ovs",  # type: ignore[arg-type]
                container_role="slave" if kind == "memif" else "server",
                memif_mode="ethernet" if kind == "memif" else None,
                host_dir=naming.slot_dir(run_dir, device_id),
                container_dir=naming.container_slot_dir("mf", device_id))
    assert slot.host_dir is not None
    slot.host_dir.mkdir(parents=True)
    return slot


def _view(queues: int | None) -> ContainerView:
    return ContainerView("net", "net1", "02:00:00:00:00:01",
                         IpamResult(ips=(IpConfig("10.56.0.7/24", "10.56.0.1"),)), queues=queues)


def test_refresh_writes_only_when_the_queue_count_changed(tmp_path: Path):
    slot = _slot(tmp_path)
    path = write_container_config(slot, _view(2))
    assert path is not None
    first = json.loads(path.read_text())
    stat = os.stat(path)

    assert refresh_container_config(slot, 2) is False
    again = os.stat(path)
    assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)

    assert refresh_container_config(slot, 5) is True
    changed = json.loads(path.read_text())
    assert changed == {**first, "queues": 5}
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"  # still readable by any container user

    assert refresh_container_config(slot, None) is True  # the vSwitch leaves it to the container
    assert "queues" not in json.loads(path.read_text())


def test_refresh_creates_no_file_and_leaves_vhost_user_alone(tmp_path: Path):
    memif = _slot(tmp_path / "a")
    assert refresh_container_config(memif, 3) is False
    assert not (memif.host_dir / naming.CONTAINER_CONFIG_NAME).exists()  # type: ignore[operator]
    vhost = _slot(tmp_path / "b", kind="vhost-user")
    path = write_container_config(vhost, _view(None))
    assert path is not None
    before = path.read_bytes()
    assert refresh_container_config(vhost, 3) is False
    assert path.read_bytes() == before


def test_refresh_of_a_damaged_file_is_an_io_error_naming_it(tmp_path: Path):
    slot = _slot(tmp_path)
    path = slot.host_dir / naming.CONTAINER_CONFIG_NAME  # type: ignore[operator]
    path.write_text("[1, 2")
    with pytest.raises(CniError) as caught:
        refresh_container_config(slot, 3)
    assert caught.value.code == errors.IO_FAILURE and str(path) in caught.value.msg
