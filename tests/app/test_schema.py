"""numanet.json's JSON Schema: published in deploy/, shipped in the kit, and every file
numanet's CNI writes follows it (the real writers, every kind and role)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from app import slotconfig
from app.view import from_config
from cni import container_config as writer
from cni.container_config import ContainerView, container_config, write_container_config
from cni.result import Dns, IpamResult, IpConfig, Route
from deviceplugin import naming
from deviceplugin.slots import Slot

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "deploy" / "schemas" / "numanet.json.schema.json"
SHIPPED = REPO / "app" / "schemas" / "numanet.json.schema.json"
SCHEMA = json.loads(SHIPPED.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA,
                                            format_checker=jsonschema.FormatChecker())

IPAM = IpamResult(
    ips=(IpConfig("10.56.0.7/24", "10.56.0.1"), IpConfig("fd00::7/64")),
    routes=(Route("10.78.0.0/16"), Route("0.0.0.0/0", "10.56.0.254",
                                         (("mtu", 1400), ("priority", 10)))),
    dns=Dns(nameservers=("10.96.0.10",), search=("svc.cluster.local",)))


def _slot(tmp_path: Path, pool: str, kind: str, role: str | None, **extra) -> Slot:
    device_id = naming.slot_device_id(pool, 1, 0)
    host_dir = tmp_path / pool
    host_dir.mkdir()
    return Slot(device_id=device_id, pool=pool, resource=naming.resource_name("numanet.io", pool),
                kind=kind, numa_node=1, vswitch="ovs", container_role=role,  # type: ignore[arg-type]
                host_dir=host_dir, container_dir=naming.container_slot_dir(pool, device_id),
                **extra)


# name -> (slot fields, view fields)
WRITTEN = {
    "vhost-user server": (dict(pool="vhostuser-ovs", kind="vhost-user", role="server"), {}),
    "vhost-user client, ring size": (dict(pool="vhostc-ovs", kind="vhost-user", role="client",
                                          ring_size=256), {}),
    "memif slave, queues and sizes": (dict(pool="memif-ovs", kind="memif", role="slave",
                                           memif_mode="ethernet", ring_size=1024,
                                           buffer_size=2048), dict(queues=3)),
    "memif master": (dict(pool="memifm-vpp", kind="memif", role="master",
                          memif_mode="ethernet"), {}),
    "memif slave, mode ip": (dict(pool="memifip-vpp", kind="memif", role="slave",
                                  memif_mode="ip"),
                             dict(address="10.56.0.7/24", peer="10.56.0.1")),
}


@pytest.mark.parametrize("case", WRITTEN)
def test_every_numanet_json_the_cni_writes_validates(tmp_path, case):
    slot_fields, view_fields = WRITTEN[case]
    slot_fields = dict(slot_fields)
    slot = _slot(tmp_path, slot_fields.pop("pool"), slot_fields.pop("kind"),
                 slot_fields.pop("role"), **slot_fields)
    for mac, mtu, ipam in (("02:00:00:00:00:07", 9000, IPAM), (None, None, IpamResult())):
        path = write_container_config(slot, ContainerView("net-a", "net1", mac, ipam, mtu,
                                                          **view_fields))
        assert path is not None
        doc = json.loads(path.read_text())
        VALIDATOR.validate(doc)
        assert doc["schemaVersion"] == writer.SCHEMA_VERSION
        # ... and the kit reads it back as written.
        iface = from_config(slotconfig.check_config(doc, str(path)))
        assert (iface.kind, iface.role, iface.socket) == (slot.kind, slot.container_role,
                                                         str(slot.container_socket))
        assert iface.mac == mac and iface.numa_node == 1


def test_a_refreshed_memif_config_still_validates(tmp_path):
    slot = _slot(tmp_path, "memif-ovs", "memif", "slave", memif_mode="ethernet")
    write_container_config(slot, ContainerView("net-a", "net1", None, IPAM, queues=2))
    assert writer.refresh_container_config(slot, None)
    VALIDATOR.validate(json.loads((slot.host_dir / "numanet.json").read_text()))


def test_a_nics_config_validates():
    """numanet writes no file for a NIC (it has no slot directory); the document the writer
    makes for one still follows the schema."""
    slot = Slot(device_id="0000:3b:02.0", pool="dpdk-nic", resource="numanet.io/dpdk-nic",
                kind="dpdk-nic", numa_node=None, pci_address="0000:3b:02.0")
    doc = container_config(slot, ContainerView("net-a", "net1", "02:00:00:00:00:07", IPAM, 1500))
    VALIDATOR.validate(doc)
    assert from_config(slotconfig.check_config(doc, "nic")).pci_address == "0000:3b:02.0"


@pytest.mark.parametrize("change", [
    {"socketPath": None},  # a socket kind without its socket
    {"surprise": 1},  # every field is in the schema
    {"role": "slave"},  # a memif field on a vhost-user
    {"mode": "serv"},
    {"schemaVersion": "2.0"},
    {"ips": [{"address": "10.0.0.1"}]},  # CIDR
    {"mac": "02:00:00:00:00"},
])
def test_the_schema_really_refuses(tmp_path, change):
    slot = _slot(tmp_path, "vhostuser-ovs", "vhost-user", "server")
    doc = container_config(slot, ContainerView("net-a", "net1", None, IPAM))
    VALIDATOR.validate(doc)
    doc.update(change)
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(doc)


def test_published_shipped_and_versions_agree():
    assert PUBLISHED.read_bytes() == SHIPPED.read_bytes(), \
        "deploy/schemas and app/schemas differ: copy app/schemas/numanet.json.schema.json"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    version = writer.SCHEMA_VERSION
    assert version == slotconfig.SCHEMA_VERSION
    assert f"/{version}/" in SCHEMA["$id"] and SCHEMA["title"].endswith(version)
    assert int(version.split(".")[0]) == SCHEMA["properties"]["version"]["const"] == \
        writer.FORMAT_VERSION


def test_the_schema_is_package_data():
    import configparser

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["options.package_data"]["app"].strip() == "schemas/*.json"
