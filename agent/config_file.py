"""The agent's configuration file: one YAML document, read and validated into the
records of ``deviceplugin.config``.

Every error names the key path (``pools[1].slotsPerNode``), what was wrong and what to
write instead, so a bad ConfigMap stops the agent with one line a person can act on.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from deviceplugin import naming
from deviceplugin.config import (
    FRONTENDS,
    MAX_NUMA_ID,
    MAX_SLOTS_PER_NODE,
    POOL_KINDS,
    SOCKET_KINDS,
    VSWITCHES,
    Config,
    Frontend,
    HugepagesConfig,
    NicSelectors,
    OvsConfig,
    PoolConfig,
    PoolKind,
    VppConfig,
    default_pools,
)
from numa.pagesize import page_size_kb

DEFAULT_CONFIG_PATH = Path("/etc/numanet/config.yaml")
_HEX4 = re.compile(r"^[0-9a-f]{4}$")
# Pool keys that only some kinds take, in the order they are checked.
_KEY_KINDS: dict[str, tuple[str, ...]] = {
    "vswitch": SOCKET_KINDS, "slotsPerNode": SOCKET_KINDS, "numaNodes": SOCKET_KINDS,
    "ringSize": SOCKET_KINDS, "bufferSize": SOCKET_KINDS, "mode": ("vhost-user",),
    "role": ("memif",), "memifMode": ("memif",), "selectors": ("dpdk-nic",),
}


class ConfigError(ValueError):
    """A configuration file numanet refuses; ``key`` is the path of the offending key."""

    def __init__(self, key: str, message: str, source: str = "config") -> None:
        self.key = key
        self.source = source
        where = f"{key}: " if key else ""
        super().__init__(f"{source}: {where}{message}")



def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError naming the file and the key."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", "file not found: create it or point --config at the right file",
                          source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read the file ({exc})", source) from None
    return parse_config_text(text, source=source)


def parse_config_text(text: str, source: str = "config") -> Config:
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - safe loader subclass
    except _DuplicateKey as exc:
        raise ConfigError(exc.key, "appears twice in the same mapping: keep one", source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("", f"is not valid YAML{where}: {problem}", source) from None
    if document is None:
        document = {}
    return parse_config(document, source=source)


def parse_config(mapping: Any, source: str = "config") -> Config:
    """Validate an already-parsed document (a dict from YAML or JSON)."""
    return _Parser(source).config(mapping)


# --- internals --------------------------------------------------------------------------


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (YAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, str | int) and key in seen:
                raise _DuplicateKey(str(key))
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(key, message, self.source)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            what = "must be" if key else "the top level must be"
            raise self.error(key, f"{what} a mapping of keys to values, got {_show(value)}")
        for k in value:
            if not isinstance(k, str) or k not in allowed:
                path = f"{key}.{k}" if key else str(k)
                raise self.error(path, f"unknown key: the keys allowed here are "
                                 f"{', '.join(allowed)} (check the spelling and case)")
        return value

    def string(self, value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {_show(value)}")
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, got {_show(value)}")
        return value

    def integer(self, value: Any, key: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, f"must be an integer between {low} and {high}, "
                             f"got {_show(value)}")
        return value

    def string_list(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(key, f"must be a list of strings such as [\"a\", \"b\"], "
                             f"got {_show(value)}")
        out = []
        for i, item in enumerate(value):
            # YAML reads an unquoted 8086 as an integer; the user meant the hex ID.
            if isinstance(item, int) and not isinstance(item, bool):
                item = str(item)
            out.append(self.string(item, f"{key}[{i}]"))
        return tuple(out)

    # --- sections ---

    def config(self, document: Any) -> Config:
        top = self.mapping(document, "", ("resourcePrefix", "hugepages", "vswitches", "pools"))
        prefix = self.prefix(top.get("resourcePrefix", naming.DEFAULT_PREFIX))
        hugepages = self.hugepages(top.get("hugepages", {}))
        ovs, vpp = self.vswitches(top.get("vswitches", {}))
        pools = self.pools(top["pools"]) if "pools" in top else default_pools()
        self.dra_names_fit(prefix, pools)
        return Config(resource_prefix=prefix, hugepages=hugepages, ovs=ovs, vpp=vpp, pools=pools)

    def prefix(self, value: Any) -> str:
        key = "resourcePrefix"
        value = self.string(value, key)
        try:
            naming.validate_prefix(value)
        except naming.InvalidName:
            raise self.error(key, f"must be a DNS subdomain such as numanet.io, got "
                             f"{_show(value)}") from None
        if value == "kubernetes.io" or value.endswith(".kubernetes.io"):
            raise self.error(key, "the kubernetes.io domain is reserved for Kubernetes' own "
                             "resources: use your own domain such as numanet.io")
        return value

    def hugepages(self, value: Any) -> HugepagesConfig:
        section = self.mapping(value if value is not None else {}, "hugepages",
                               ("pageSize", "path", "required"))
        page_size = self.string(section.get("pageSize", "2Mi"), "hugepages.pageSize")
        try:
            page_size_kb(page_size)
        except ValueError as exc:
            raise self.error("hugepages.pageSize", f"must be a hugepage size such as 2Mi or "
                             f"1Gi, got {_show(page_size)} ({exc})") from None
        path = self.string(section.get("path", "/dev/hugepages"), "hugepages.path")
        if not path.startswith("/"):
            raise self.error("hugepages.path", f"must be an absolute path such as "
                             f"/dev/hugepages, got {_show(path)}")
        required = section.get("required", True)
        if not isinstance(required, bool):
            raise self.error("hugepages.required", f"must be true or false, got "
                             f"{_show(required)}")
        return HugepagesConfig(page_size=page_size, path=Path(path), required=required)

    def vswitches(self, value: Any) -> tuple[OvsConfig, VppConfig]:
        section = self.mapping(value if value is not None else {}, "vswitches", VSWITCHES)
        ovs_section = self.mapping(section.get("ovs") or {}, "vswitches.ovs",
                                   ("db", "bridge", "prepareAtAllocate"))
        prepare = ovs_section.get("prepareAtAllocate", OvsConfig.prepare_at_allocate)
        if not isinstance(prepare, bool):
            raise self.error("vswitches.ovs.prepareAtAllocate",
                             f"must be true or false, got {_show(prepare)}")
        ovs = OvsConfig(
            db=self.string(ovs_section.get("db", OvsConfig.db), "vswitches.ovs.db"),
            bridge=self.string(ovs_section.get("bridge", OvsConfig.bridge),
                               "vswitches.ovs.bridge"),
            prepare_at_allocate=prepare,
        )
        if not re.match(r"^(unix|tcp|ssl):", ovs.db):
            raise self.error("vswitches.ovs.db", f"must be an OVSDB connection such as "
                             f"unix:/run/openvswitch/db.sock, got {_show(ovs.db)}")
        vpp_section = self.mapping(section.get("vpp") or {}, "vswitches.vpp",
                                   ("apiSocket", "apiDir"))
        api_dir = vpp_section.get("apiDir")
        vpp = VppConfig(
            api_socket=self.string(vpp_section.get("apiSocket", VppConfig.api_socket),
                                   "vswitches.vpp.apiSocket"),
            api_dir=self.string(api_dir, "vswitches.vpp.apiDir") if api_dir is not None else None,
        )
        return ovs, vpp

    def pools(self, value: Any) -> tuple[PoolConfig, ...]:
        if not isinstance(value, list):
            raise self.error("pools", f"must be a list of pools (each starting with '- name:'), "
                             f"got {_show(value)}")
        if not value:
            raise self.error("pools", "is empty: add at least one pool, or remove the key to "
                             "get the default pools")
        pools: list[PoolConfig] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(value):
            pool = self.pool(item, f"pools[{i}]")
            if pool.name in seen:
                raise self.error(f"pools[{i}].name", f"{_show(pool.name)} is already the name "
                                 f"of pools[{seen[pool.name]}]: pool names must be unique")
            seen[pool.name] = i
            pools.append(pool)
        self.env_names_distinct(pools)
        return tuple(pools)

    def dra_names_fit(self, prefix: str, pools: tuple[PoolConfig, ...]) -> None:
        # A DRA pool's resource name is a ResourceSlice attribute value (Multus matches it
        # with the NAD's): the API server takes at most 64 characters there.
        for i, pool in enumerate(pools):
            resource = naming.resource_name(prefix, pool.name)
            if pool.is_dra and len(resource) > naming.MAX_DRA_ATTRIBUTE_VALUE:
                raise self.error(f"pools[{i}].name", f"gives resource name {resource!r} "
                                 f"({len(resource)} characters), longer than the "
                                 f"{naming.MAX_DRA_ATTRIBUTE_VALUE} a ResourceSlice attribute "
                                 "takes: shorten the pool name for frontend: dra")

    def env_names_distinct(self, pools: list[PoolConfig]) -> None:
        # NUMANET_<POOL>_NUMA of pool "a" is NUMANET_<POOL> of pool "a-numa": refuse the pair.
        owners: dict[str, int] = {}
        for i, pool in enumerate(pools):
            for env in (naming.pool_env_name(pool.name), naming.pool_numa_env_name(pool.name)):
                if env in owners and owners[env] != i:
                    raise self.error(f"pools[{i}].name", f"{_show(pool.name)} gives environment "
                                     f"variable {env}, which pools[{owners[env]}] also sets: "
                                     "rename one of the pools")
                owners[env] = i

    def pool(self, value: Any, key: str) -> PoolConfig:
        section = self.mapping(value, key, (
            "name", "kind", "vswitch", "mode", "role", "memifMode", "slotsPerNode",
            "numaNodes", "selectors", "ringSize", "bufferSize", "frontend"))
        if "name" not in section:
            raise self.error(f"{key}.name", "is missing: every pool needs a name (a DNS label "
                             "such as vhostuser-ovs)")
        name = self.pool_name(section["name"], f"{key}.name")
        if "kind" not in section:
            raise self.error(f"{key}.kind", f"is missing: set it to one of "
                             f"{', '.join(POOL_KINDS)}")
        kind: PoolKind = self.string(section["kind"], f"{key}.kind", POOL_KINDS)  # type: ignore[assignment]
        for option, kinds in _KEY_KINDS.items():
            if option in section and kind not in kinds:
                raise self.error(f"{key}.{option}", f"applies only to pools of kind "
                                 f"{' or '.join(kinds)}, not {kind}: remove it")
        frontend: Frontend = self.string(section.get("frontend", "deviceplugin"),  # type: ignore[assignment]
                                         f"{key}.frontend", FRONTENDS)
        if kind == "dpdk-nic":
            return PoolConfig(name=name, kind=kind, frontend=frontend,
                              selectors=self.selectors(section.get("selectors"),
                                                       f"{key}.selectors"))
        if "vswitch" not in section:
            raise self.error(f"{key}.vswitch", f"is missing: a {kind} pool needs the vSwitch "
                             f"that serves its sockets, one of {', '.join(VSWITCHES)}")
        vswitch = self.string(section["vswitch"], f"{key}.vswitch", VSWITCHES)
        slots = self.integer(section.get("slotsPerNode", 32), f"{key}.slotsPerNode", 1,
                             MAX_SLOTS_PER_NODE)
        try:
            naming.slot_device_id(name, MAX_NUMA_ID, slots - 1)
        except naming.InvalidName:
            longest = len(naming.slot_device_id("", MAX_NUMA_ID, slots - 1))
            raise self.error(f"{key}.name", f"{_show(name)} is too long for device IDs "
                             f"(<pool>-n<numa>-<index>, at most {naming.MAX_DEVICE_ID} "
                             f"characters): use at most {naming.MAX_DEVICE_ID - longest} "
                             "characters") from None
        mode = role = memif_mode = None
        if kind == "vhost-user":
            mode = self.string(section.get("mode", "server"), f"{key}.mode", ("server", "client"))
        else:
            role = self.string(section.get("role", "slave"), f"{key}.role", ("slave", "master"))
            memif_mode = self.string(section.get("memifMode", "ethernet"), f"{key}.memifMode",
                                     ("ethernet", "ip"))
        ring_size = None
        if "ringSize" in section:
            ring_size = self.integer(section["ringSize"], f"{key}.ringSize", 2, 32768)
            if ring_size & (ring_size - 1):
                raise self.error(f"{key}.ringSize", f"must be a power of two such as 1024, "
                                 f"got {ring_size}")
        buffer_size = None
        if "bufferSize" in section:
            buffer_size = self.integer(section["bufferSize"], f"{key}.bufferSize", 128, 65535)
        return PoolConfig(
            name=name, kind=kind, vswitch=vswitch, mode=mode, role=role, memif_mode=memif_mode,
            slots_per_node=slots, numa_nodes=self.numa_nodes(section.get("numaNodes", "auto"),
                                                             f"{key}.numaNodes"),
            ring_size=ring_size, buffer_size=buffer_size, frontend=frontend,
        )

    def pool_name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not naming.is_dns_label(value):
            raise self.error(key, f"must be a DNS label (lower-case letters, digits and '-', "
                             f"starting and ending with a letter or digit), got {_show(value)}")
        return value

    def numa_nodes(self, value: Any, key: str) -> Literal["auto"] | tuple[int, ...]:
        if value == "auto":
            return "auto"
        if not isinstance(value, list) or not value:
            raise self.error(key, f"must be auto or a non-empty list of NUMA node IDs such as "
                             f"[0, 1], got {_show(value)}")
        nodes = [self.integer(v, f"{key}[{i}]", 0, MAX_NUMA_ID) for i, v in enumerate(value)]
        if len(set(nodes)) != len(nodes):
            raise self.error(key, f"lists a NUMA node twice ({_show(value)}): list each once")
        return tuple(sorted(nodes))

    def selectors(self, value: Any, key: str) -> NicSelectors:
        if value is None:
            raise self.error(key, "is missing: a dpdk-nic pool needs selectors (vendors, "
                             "devices, drivers, pfNames or pciAddresses), or it would claim "
                             "every NIC of the node")
        section = self.mapping(value, key, ("vendors", "devices", "drivers", "pfNames",
                                            "pciAddresses"))
        vendors = self.hex_ids(section.get("vendors"), f"{key}.vendors", "8086")
        devices = self.hex_ids(section.get("devices"), f"{key}.devices", "1889")
        drivers = self.string_list(section.get("drivers"), f"{key}.drivers")
        pf_names = self.string_list(section.get("pfNames"), f"{key}.pfNames")
        addresses = tuple(a.lower() for a in self.string_list(section.get("pciAddresses"),
                                                               f"{key}.pciAddresses"))
        for i, address in enumerate(addresses):
            if not naming.is_pci_address(address):
                raise self.error(f"{key}.pciAddresses[{i}]", f"must be a full PCI address such "
                                 f"as 0000:3b:00.1, got {_show(address)}")
        selectors = NicSelectors(vendors=vendors, devices=devices, drivers=drivers,
                                 pf_names=pf_names, pci_addresses=addresses)
        if selectors.is_empty():
            raise self.error(key, "are all empty, which would claim every NIC of the node: "
                             "list vendors, devices, drivers, pfNames or pciAddresses")
        return selectors

    def hex_ids(self, value: Any, key: str, example: str) -> tuple[str, ...]:
        out = []
        for i, item in enumerate(self.string_list(value, key)):
            normal = item.lower().removeprefix("0x")
            if not _HEX4.fullmatch(normal):
                raise self.error(f"{key}[{i}]", f"must be a 4-digit hex PCI ID such as "
                                 f"\"{example}\" (quote it in YAML), got {_show(item)}")
            out.append(normal)
        return tuple(out)
