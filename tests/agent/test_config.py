"""Configuration: the DESIGN.md shape, defaults, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config_file import ConfigError, load_config, parse_config, parse_config_text
from deviceplugin import naming
from deviceplugin.config import (
    Config,
    HugepagesConfig,
    NicSelectors,
    OvsConfig,
    PoolConfig,
    VppConfig,
)

DESIGN_EXAMPLE = """\
resourcePrefix: numanet.io          # resource names are <resourcePrefix>/<pool name>
hugepages: {pageSize: 2Mi, path: /dev/hugepages}   # mounted into containers at Allocate
vswitches:
  ovs: {db: unix:/run/openvswitch/db.sock, bridge: br-numanet}
  vpp: {apiSocket: /run/vpp/api.sock}
pools:
  - name: vhostuser-ovs
    kind: vhost-user                # vhost-user | memif | dpdk-nic
    vswitch: ovs                    # ovs | vpp (socket kinds only)
    mode: server                    # container side, see Roles
    slotsPerNode: 32
    numaNodes: auto                 # auto | [0, 1]
  - name: memif-vpp
    kind: memif
    vswitch: vpp
    role: slave                     # container side
    memifMode: ethernet             # ethernet | ip
    slotsPerNode: 64
    numaNodes: auto
  - name: dpdk-nic
    kind: dpdk-nic
    selectors: {vendors: ["8086"], devices: ["1889"], drivers: [vfio-pci], pfNames: [], \
pciAddresses: []}
"""


def test_design_example_parses_to_the_documented_records() -> None:
    config = parse_config_text(DESIGN_EXAMPLE, source="design")
    assert config.resource_prefix == "numanet.io"
    assert config.hugepages == HugepagesConfig("2Mi", Path("/dev/hugepages"))
    assert config.hugepages.page_size_kb == 2048
    assert config.ovs == OvsConfig("unix:/run/openvswitch/db.sock", "br-numanet")
    assert config.vpp == VppConfig("/run/vpp/api.sock", None)
    vhost, memif, nic = config.pools
    assert vhost == PoolConfig(name="vhostuser-ovs", kind="vhost-user", vswitch="ovs",
                               mode="server", slots_per_node=32, numa_nodes="auto")
    assert vhost.container_role == "server"
    assert memif == PoolConfig(name="memif-vpp", kind="memif", vswitch="vpp", role="slave",
                               memif_mode="ethernet", slots_per_node=64, numa_nodes="auto")
    assert memif.container_role == "slave"
    assert nic.kind == "dpdk-nic"
    assert nic.selectors == NicSelectors(vendors=("8086",), devices=("1889",),
                                         drivers=("vfio-pci",))
    assert config.vswitches_in_use() == ("ovs", "vpp")
    assert config.resource("memif-vpp") == "numanet.io/memif-vpp"


def test_empty_file_takes_every_default() -> None:
    config = parse_config_text("")
    assert config.resource_prefix == "numanet.io"
    assert config.hugepages == HugepagesConfig()
    assert config.ovs == OvsConfig() and config.vpp == VppConfig()
    # The defaults are the pools of DESIGN.md's example.
    assert [p.name for p in config.pools] == ["vhostuser-ovs", "memif-vpp", "dpdk-nic"]
    assert config == parse_config({})


def test_ports_are_prepared_at_allocate_unless_switched_off() -> None:
    assert parse_config({}).ovs.prepare_at_allocate is True
    off = parse_config({"vswitches": {"ovs": {"prepareAtAllocate": False}}})
    assert off.ovs == OvsConfig(prepare_at_allocate=False)


def test_socket_pool_defaults_and_explicit_numa_nodes() -> None:
    config = parse_config({"pools": [
        {"name": "a", "kind": "vhost-user", "vswitch": "ovs", "numaNodes": [1, 0]},
        {"name": "b", "kind": "memif", "vswitch": "vpp", "ringSize": 1024, "bufferSize": 2048},
    ]})
    a, b = config.pools
    assert (a.mode, a.slots_per_node, a.numa_nodes) == ("server", 32, (0, 1))
    assert (b.role, b.memif_mode, b.ring_size, b.buffer_size) == ("slave", "ethernet", 1024, 2048)


def test_vendor_ids_are_normalised_and_unquoted_numbers_accepted() -> None:
    config = parse_config_text("""
pools:
  - name: nic
    kind: dpdk-nic
    selectors: {vendors: [8086, "0x15B3"], pciAddresses: ["0000:3B:00.1"]}
""")
    selectors = config.pools[0].selectors
    assert selectors is not None
    assert selectors.vendors == ("8086", "15b3")
    assert selectors.pci_addresses == ("0000:3b:00.1",)


def test_load_config_reads_a_file_and_names_it_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(DESIGN_EXAMPLE)
    assert isinstance(load_config(good), Config)
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools:\n  - {name: x, kind: vhost-user, vswitch: ovs, slotsPerNode: x}\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value) == (f'{bad}: pools[0].slotsPerNode: must be an integer between 1 '
                              'and 4096, got "x"')
    assert err.value.key == "pools[0].slotsPerNode"
    with pytest.raises(ConfigError, match="file not found: create it or point --config"):
        load_config(tmp_path / "missing.yaml")


POOL_OK = {"name": "p", "kind": "vhost-user", "vswitch": "ovs"}


@pytest.mark.parametrize(("document", "key", "fragment"), [
    ({"resourcPrefix": "x.io"}, "resourcPrefix", "unknown key: the keys allowed here are"),
    ({"resourcePrefix": "Not A Domain"}, "resourcePrefix", "DNS subdomain such as numanet.io"),
    ({"resourcePrefix": "kubernetes.io"}, "resourcePrefix", "reserved for Kubernetes"),
    ({"hugepages": {"pageSize": "3Mi"}}, "hugepages.pageSize", "such as 2Mi or 1Gi"),
    ({"hugepages": {"path": "dev/hugepages"}}, "hugepages.path", "absolute path"),
    ({"hugepages": {"size": "2Mi"}}, "hugepages.size", "unknown key"),
    ({"vswitches": {"ovs": {"db": "/run/db.sock"}}}, "vswitches.ovs.db", "unix:/run/openvswitch"),
    ({"vswitches": {"bess": {}}}, "vswitches.bess", "unknown key"),
    ({"vswitches": {"ovs": {"prepareAtAllocate": "yes"}}}, "vswitches.ovs.prepareAtAllocate",
     "must be true or false"),
    ({"vswitches": {"vpp": {"api_socket": "/x"}}}, "vswitches.vpp.api_socket", "unknown key"),
    ({"pools": {}}, "pools", "must be a list of pools"),
    ({"pools": []}, "pools", "is empty"),
    ({"pools": ["x"]}, "pools[0]", "must be a mapping"),
    ({"pools": [{"kind": "memif"}]}, "pools[0].name", "is missing"),
    ({"pools": [{**POOL_OK, "name": "Bad_Name"}]}, "pools[0].name", "must be a DNS label"),
    ({"pools": [{**POOL_OK, "name": "x" * 60}]}, "pools[0].name", "too long for device IDs"),
    ({"pools": [POOL_OK, POOL_OK]}, "pools[1].name", "already the name of pools[0]"),
    ({"pools": [POOL_OK, {**POOL_OK, "name": "p-numa"}]}, "pools[1].name",
     "NUMANET_P_NUMA"),
    ({"pools": [{"name": "p"}]}, "pools[0].kind", "is missing: set it to one of"),
    ({"pools": [{**POOL_OK, "kind": "sriov"}]}, "pools[0].kind",
     "must be one of vhost-user, memif, dpdk-nic"),
    ({"pools": [{"name": "p", "kind": "memif"}]}, "pools[0].vswitch", "is missing"),
    ({"pools": [{**POOL_OK, "vswitch": "bess"}]}, "pools[0].vswitch", "must be one of ovs, vpp"),
    ({"pools": [{**POOL_OK, "slotsPerNode": 0}]}, "pools[0].slotsPerNode",
     "between 1 and 4096, got 0"),
    ({"pools": [{**POOL_OK, "slotsPerNode": True}]}, "pools[0].slotsPerNode", "got true"),
    ({"pools": [{**POOL_OK, "slotsPerNode": 5000}]}, "pools[0].slotsPerNode", "got 5000"),
    ({"pools": [{**POOL_OK, "numaNodes": "all"}]}, "pools[0].numaNodes", "auto or a non-empty"),
    ({"pools": [{**POOL_OK, "numaNodes": [0, 0]}]}, "pools[0].numaNodes", "twice"),
    ({"pools": [{**POOL_OK, "numaNodes": [-1]}]}, "pools[0].numaNodes[0]", "between 0 and 999"),
    ({"pools": [{**POOL_OK, "mode": "master"}]}, "pools[0].mode", "one of server, client"),
    ({"pools": [{**POOL_OK, "role": "slave"}]}, "pools[0].role",
     "applies only to pools of kind memif, not vhost-user: remove it"),
    ({"pools": [{**POOL_OK, "memifMode": "ip"}]}, "pools[0].memifMode", "only to pools of kind"),
    ({"pools": [{"name": "m", "kind": "memif", "vswitch": "vpp", "mode": "server"}]},
     "pools[0].mode", "applies only to pools of kind vhost-user, not memif"),
    ({"pools": [{"name": "m", "kind": "memif", "vswitch": "vpp", "role": "server"}]},
     "pools[0].role", "one of slave, master"),
    ({"pools": [{"name": "m", "kind": "memif", "vswitch": "vpp", "memifMode": "l3"}]},
     "pools[0].memifMode", "one of ethernet, ip"),
    ({"pools": [{**POOL_OK, "ringSize": 1000}]}, "pools[0].ringSize", "power of two"),
    ({"pools": [{**POOL_OK, "selectors": {"vendors": ["8086"]}}]}, "pools[0].selectors",
     "applies only to pools of kind dpdk-nic"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic"}]}, "pools[0].selectors",
     "would claim every NIC"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "selectors": {}}]}, "pools[0].selectors",
     "are all empty"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "vswitch": "ovs"}]}, "pools[0].vswitch",
     "applies only to pools of kind vhost-user or memif, not dpdk-nic"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "slotsPerNode": 2}]}, "pools[0].slotsPerNode",
     "not dpdk-nic"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "selectors": {"vendors": ["intel"]}}]},
     "pools[0].selectors.vendors[0]", "4-digit hex PCI ID"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "selectors": {"vendors": ["8086\n"]}}]},
     "pools[0].selectors.vendors[0]", "4-digit hex PCI ID"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "selectors": {"pciAddresses": ["3b:00.1"]}}]},
     "pools[0].selectors.pciAddresses[0]", "full PCI address"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "selectors": {"drivers": "vfio-pci"}}]},
     "pools[0].selectors.drivers", "must be a list of strings"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "selectors": {"pfName": ["x"]}}]},
     "pools[0].selectors.pfName", "unknown key"),
])
def test_bad_config_names_the_key(document: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(document, source="cm")
    assert err.value.key == key
    message = str(err.value)
    assert message.startswith(f"cm: {key}: "), message
    assert fragment in message, message


def test_yaml_errors_name_the_line_and_duplicate_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"is not valid YAML at line 3, column 1: expected"):
        parse_config_text("pools:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"resourcePrefix: appears twice"):
        parse_config_text("resourcePrefix: a.io\nresourcePrefix: b.io\n")
    with pytest.raises(ConfigError, match=r"the top level must be a mapping"):
        parse_config_text("- just\n- a list\n")


@pytest.mark.parametrize(("document", "key", "fragment"), [
    # An unknown key is named before the missing key it was meant to be.
    ({"pools": [{"nam": "p", "kind": "memif", "vswitch": "vpp"}]}, "pools[0].nam",
     "unknown key: the keys allowed here are name, kind, vswitch, mode, role, memifMode, "
     "slotsPerNode, numaNodes, selectors, ringSize, bufferSize, frontend (check the spelling "
     "and case)"),
    # A key of another kind is refused as such, whatever its value.
    ({"pools": [{**POOL_OK, "role": "client"}]}, "pools[0].role",
     "applies only to pools of kind memif, not vhost-user: remove it"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "mode": "x", "slotsPerNode": "y"}]},
     "pools[0].slotsPerNode", "applies only to pools of kind vhost-user or memif, not dpdk-nic"),
    # Leaving a key out takes its default; an explicit null does not.
    ({"pools": [{**POOL_OK, "ringSize": None}]}, "pools[0].ringSize",
     "must be an integer between 2 and 32768, got null"),
    ({"pools": [{**POOL_OK, "bufferSize": None}]}, "pools[0].bufferSize", "got null"),
    ({"pools": [{**POOL_OK, "vswitch": None}]}, "pools[0].vswitch",
     "must be one of ovs, vpp, got null"),
    ({"pools": [{**POOL_OK, "mode": None}]}, "pools[0].mode", "one of server, client, got null"),
    ({"pools": None}, "pools", "must be a list of pools (each starting with '- name:'), got null"),
    ({"pools": [None]}, "pools[0]", "must be a mapping of keys to values, got null"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "selectors": None}]}, "pools[0].selectors",
     "is missing: a dpdk-nic pool needs selectors"),
    ({"vswitches": {"ovs": {"db": None}}}, "vswitches.ovs.db", "non-empty string, got null"),
    # Strict values: no string for a number, no number or string for a boolean.
    ({"pools": [{**POOL_OK, "slotsPerNode": "3"}]}, "pools[0].slotsPerNode", 'got "3"'),
    ({"pools": [{**POOL_OK, "slotsPerNode": 1.0}]}, "pools[0].slotsPerNode", "got 1.0"),
    ({"pools": [{**POOL_OK, "numaNodes": [1, True]}]}, "pools[0].numaNodes[1]", "got true"),
    ({"hugepages": {"required": 0}}, "hugepages.required", "must be true or false, got 0"),
    ({"hugepages": {"pageSize": 2}}, "hugepages.pageSize", "must be a non-empty string, got 2"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "selectors": {"vendors": [True]}}]},
     "pools[0].selectors.vendors[0]", "must be a non-empty string, got true"),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "selectors": {"drivers": [""]}}]},
     "pools[0].selectors.drivers[0]", 'must be a non-empty string, got ""'),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "selectors": {"pciAddresses": ["0000:3B:0"]}}]},
     "pools[0].selectors.pciAddresses[0]", 'got "0000:3b:0"'),
    ({"pools": [{"name": "n", "kind": "dpdk-nic", "selectors": {"vendors": [123]}}]},
     "pools[0].selectors.vendors[0]", 'got "123"'),
    ({"pools": [{**POOL_OK, "name": "x" * 55, "slotsPerNode": 4096}]}, "pools[0].name",
     "use at most 53 characters"),
    ({"pools": [{**POOL_OK, 5: 1}]}, "pools[0].5", "unknown key"),
    ({1: 2}, "1", "unknown key: the keys allowed here are resourcePrefix, hugepages, vswitches, "
     "pools"),
])
def test_more_bad_configs_name_the_key(document: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(document, source="cm")
    assert err.value.key == key
    message = str(err.value)
    assert message.startswith(f"cm: {key}: "), message
    assert fragment in message, message
    assert "\n" not in message  # the first error, on one line


@pytest.mark.parametrize("document", [None, [], "x", 1, True])
def test_the_top_level_must_be_a_mapping(document: object) -> None:
    with pytest.raises(ConfigError, match=r"^cm: the top level must be a mapping of keys to "
                       r"values, got "):
        parse_config(document, source="cm")


def test_empty_sections_and_lists_take_their_defaults() -> None:
    config = parse_config_text("""
hugepages:
vswitches: {ovs: , vpp: {apiDir: }}
pools:
  - {name: n, kind: dpdk-nic, selectors: {vendors: , devices: [1889], pfNames: []}}
  - {name: p, kind: memif, vswitch: vpp, numaNodes: [3, 1, 2]}
""")
    assert config.hugepages == HugepagesConfig()
    assert (config.ovs, config.vpp) == (OvsConfig(), VppConfig())
    nic, memif = config.pools
    assert nic == PoolConfig(name="n", kind="dpdk-nic", selectors=NicSelectors(devices=("1889",)))
    assert memif == PoolConfig(name="p", kind="memif", vswitch="vpp", role="slave",
                               memif_mode="ethernet", slots_per_node=32, numa_nodes=(1, 2, 3))


def test_a_pool_is_served_by_the_device_plugin_unless_it_says_dra() -> None:
    config = parse_config({"pools": [POOL_OK, {**POOL_OK, "name": "q", "frontend": "dra"}]})
    assert [p.frontend for p in config.pools] == ["deviceplugin", "dra"]
    assert config.pools_of("dra") == ("q",)
    with pytest.raises(ConfigError) as err:
        parse_config({"pools": [{**POOL_OK, "frontend": "cdi"}]}, source="cm")
    assert str(err.value) == 'cm: pools[0].frontend: must be one of deviceplugin, dra, got "cdi"'


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_a_dra_pools_resource_name_fits_a_slice_attribute(extra: int) -> None:
    """<prefix>/<pool> is a ResourceSlice attribute value: at most 64 characters."""
    prefix = "numanet.io"
    limit = naming.MAX_DRA_ATTRIBUTE_VALUE
    name = "p" * (limit - len(prefix) - 1 + extra)
    document = {"resourcePrefix": prefix,
                "pools": [{"name": name, "kind": "dpdk-nic", "frontend": "dra",
                           "selectors": {"vendors": ["8086"]}}]}
    if extra <= 0:
        assert parse_config(document).pools[0].name == name
        return
    with pytest.raises(ConfigError) as err:
        parse_config(document, source="cm")
    assert err.value.key == "pools[0].name"
    assert f"({limit + 1} characters), longer than the {limit}" in str(err.value)
    # The same name is fine for the device plugin, which has no such limit.
    document["pools"][0]["frontend"] = "deviceplugin"
    assert parse_config(document).pools[0].name == name
