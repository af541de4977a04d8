"""The agent's configuration file: one YAML document, validated by pydantic models and
turned into the records of ``deviceplugin.config``.

Every error names the key path (``pools[1].slotsPerNode``), what was wrong and what to
write instead, so a bad ConfigMap stops the agent with one line a person can act on.
Unknown keys are errors (a typo must not silently fall back to a default).

The models are strict (no "3" for 3, no true for 1) and each value type carries its
"must be ..." text (``_must``), so a pydantic error becomes one ConfigError line; the
models stay here, and the device plugin keeps its plain dataclass records. Of several
mistakes the first is reported: a mapping's unknown keys, then a pool's keys against its
name and kind, then the values in the order of the allowed keys, then checks across keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import (
    MISSING,
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

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
_T = TypeVar("_T")
_HEX4 = re.compile(r"^[0-9a-f]{4}$")
# Pool keys that only some kinds take, in the order they are checked.
_KEY_KINDS: dict[str, tuple[str, ...]] = {
    "vswitch": SOCKET_KINDS, "slotsPerNode": SOCKET_KINDS, "numaNodes": SOCKET_KINDS,
    "ringSize": SOCKET_KINDS, "bufferSize": SOCKET_KINDS, "mode": ("vhost-user",),
    "role": ("memif",), "memifMode": ("memif",), "selectors": ("dpdk-nic",),
}
# What to write when a required key is missing.
_REQUIRED = {"name": "every pool needs a name (a DNS label such as vhostuser-ovs)",
            "kind": f"set it to one of {', '.join(POOL_KINDS)}"}


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
    try:
        model = _Config.model_validate(mapping)
    except ValidationError as exc:
        raise _config_error(exc.errors()[0], source) from None
    return model.record()


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


def _refuse(message: str, *at: str | int) -> PydanticCustomError:
    """An error with our message, at the validated value or at ``at`` below it."""
    return PydanticCustomError("numanet", "{message}", {"message": message, "at": at})


def _config_error(error: ErrorDetails, source: str) -> ConfigError:
    ctx = error.get("ctx", {})
    loc = (*error["loc"], *ctx.get("at", ()))
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).removeprefix(".")
    if error["type"] == "missing":
        message = f"is missing: {_REQUIRED[str(loc[-1])]}"
    else:
        message = ctx.get("message", error["msg"])
        message = message if loc else f"the top level {message}"
    return ConfigError(key, message, source)


def _must(what: str, ok: Callable[[Any], bool] | None = None) -> WrapValidator:
    """Report a value its type refuses (pydantic's own errors at this level, not those of
    its items or our own), or one ``ok`` refuses, as "must be <what>, got <value>"."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            value = handler(value)
        except ValidationError as exc:
            if any(e["loc"] or e["type"] == "numanet" for e in exc.errors()):
                raise
        else:
            if ok is None or ok(value):
                return value
        raise _refuse(f"must be {what}, got {_show(value)}")

    return WrapValidator(validate)


def _between(low: int, high: int) -> WrapValidator:
    return _must(f"an integer between {low} and {high}", lambda n: low <= n <= high)


def _pci_id(example: str) -> AfterValidator:
    def normal(value: str) -> str:
        normal = value.lower().removeprefix("0x")
        if not _HEX4.fullmatch(normal):
            raise _refuse(f"must be a 4-digit hex PCI ID such as \"{example}\" (quote it in "
                          f"YAML), got {_show(value)}")
        return normal

    return AfterValidator(normal)


def _or_none(value: _T | MISSING) -> _T | None:
    return None if value is MISSING else value


_Str = Annotated[str, Field(min_length=1), _must("a non-empty string")]
# YAML reads an unquoted 8086 as an integer; the user meant the hex ID.
_Item = Annotated[_Str, BeforeValidator(lambda value: str(value) if type(value) is int else value)]
# A list of _T; null or absent is an empty list.
_List = Annotated[list[_T] | None, _must("a list of strings such as [\"a\", \"b\"]")]
_Bool = Annotated[bool, _must("true or false")]
_Vswitch = Annotated[Literal["ovs", "vpp"], _must(f"one of {', '.join(VSWITCHES)}")]
_RingSize = Annotated[int, _between(2, 32768),
                      _must("a power of two such as 1024", lambda n: not n & (n - 1))]
_NUMA_IDS = TypeAdapter(
    Annotated[list[Annotated[int, _between(0, MAX_NUMA_ID)]], Field(min_length=1),
              _must("auto or a non-empty list of NUMA node IDs such as [0, 1]")],
    config=ConfigDict(strict=True))
# A section left empty (``hugepages:``) takes its defaults; vswitches.ovs and .vpp also
# take them for any false value, as the hand-written parser did.
_NULL_IS_EMPTY = BeforeValidator(lambda value: {} if value is None else value)
_FALSY_IS_EMPTY = BeforeValidator(lambda value: value or {})


class _Section(BaseModel):
    """A mapping of the file: strict values, camelCase keys, no unknown key (refused by
    ``_keys`` with the allowed keys listed; ``extra="forbid"`` stays as the backstop)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, alias_generator=to_camel)

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        # Before the values, in the order a person reads: a mapping, of known keys.
        if not isinstance(data, Mapping):
            raise _refuse(f"must be a mapping of keys to values, got {_show(data)}")
        allowed = [str(field.alias) for field in cls.model_fields.values()]
        for key in data:
            if key not in allowed:
                raise _refuse(f"unknown key: the keys allowed here are {', '.join(allowed)} "
                              "(check the spelling and case)", str(key))
        cls._given(data)
        return dict(data)

    @classmethod
    def _given(cls, data: Mapping[str, Any]) -> None:
        """Check which keys are given together, before their values."""


class _Hugepages(_Section):
    page_size: _Str = "2Mi"
    path: Annotated[_Str, _must("an absolute path such as /dev/hugepages",
                                lambda path: path.startswith("/"))] = "/dev/hugepages"
    required: _Bool = True

    @field_validator("page_size")
    @classmethod
    def _page_size(cls, value: str) -> str:
        try:
            page_size_kb(value)
        except ValueError as exc:
            raise _refuse(f"must be a hugepage size such as 2Mi or 1Gi, got {_show(value)} "
                          f"({exc})") from None
        return value


class _Ovs(_Section):
    db: Annotated[_Str, _must("an OVSDB connection such as unix:/run/openvswitch/db.sock",
                              re.compile(r"^(unix|tcp|ssl):").match)] = OvsConfig.db
    bridge: _Str = OvsConfig.bridge
    prepare_at_allocate: _Bool = OvsConfig.prepare_at_allocate


class _Vpp(_Section):
    api_socket: _Str = VppConfig.api_socket
    api_dir: _Str | None = None


class _Vswitches(_Section):
    ovs: Annotated[_Ovs, _FALSY_IS_EMPTY] = Field(default_factory=_Ovs)
    vpp: Annotated[_Vpp, _FALSY_IS_EMPTY] = Field(default_factory=_Vpp)


class _Selectors(_Section):
    vendors: _List[Annotated[_Item, _pci_id("8086")]] = None
    devices: _List[Annotated[_Item, _pci_id("1889")]] = None
    drivers: _List[_Item] = None
    pf_names: _List[_Item] = None
    pci_addresses: _List[Annotated[_Item, AfterValidator(str.lower), _must(
        "a full PCI address such as 0000:3b:00.1", naming.is_pci_address)]] = None

    @model_validator(mode="after")
    def _some(self) -> Self:
        if not any(dict(self).values()):
            raise _refuse("are all empty, which would claim every NIC of the node: list "
                          "vendors, devices, drivers, pfNames or pciAddresses")
        return self

    def record(self) -> NicSelectors:
        return NicSelectors(**{name: tuple(value or ()) for name, value in dict(self).items()})


class _Pool(_Section):
    # MISSING: the key is not given (an explicit null is refused by the type); _given makes
    # sure a pool of each kind has its required keys.
    name: Annotated[str, _must("a DNS label (lower-case letters, digits and '-', starting and "
                               "ending with a letter or digit)", naming.is_dns_label)]
    kind: Annotated[PoolKind, _must(f"one of {', '.join(POOL_KINDS)}")]
    vswitch: _Vswitch | MISSING = MISSING
    mode: Annotated[Literal["server", "client"], _must("one of server, client")] = "server"
    role: Annotated[Literal["slave", "master"], _must("one of slave, master")] = "slave"
    memif_mode: Annotated[Literal["ethernet", "ip"], _must("one of ethernet, ip")] = "ethernet"
    slots_per_node: Annotated[int, _between(1, MAX_SLOTS_PER_NODE)] = 32
    numa_nodes: Literal["auto"] | tuple[int, ...] = "auto"
    selectors: _Selectors | None = None
    ring_size: _RingSize | MISSING = MISSING
    buffer_size: Annotated[int, _between(128, 65535)] | MISSING = MISSING
    frontend: Annotated[Frontend, _must(f"one of {', '.join(FRONTENDS)}")] = "deviceplugin"

    @classmethod
    def _given(cls, data: Mapping[str, Any]) -> None:
        name, kind = data.get("name"), data.get("kind")
        if not (isinstance(name, str) and naming.is_dns_label(name)) or kind not in POOL_KINDS:
            return  # the name's or the kind's own error comes first
        for key, kinds in _KEY_KINDS.items():
            if key in data and kind not in kinds:
                raise _refuse(f"applies only to pools of kind {' or '.join(kinds)}, not {kind}: "
                              "remove it", key)
        if kind == "dpdk-nic" and data.get("selectors") is None:
            raise _refuse("is missing: a dpdk-nic pool needs selectors (vendors, devices, "
                          "drivers, pfNames or pciAddresses), or it would claim every NIC of "
                          "the node", "selectors")
        if kind != "dpdk-nic" and "vswitch" not in data:
            raise _refuse(f"is missing: a {kind} pool needs the vSwitch that serves its "
                          f"sockets, one of {', '.join(VSWITCHES)}", "vswitch")

    @field_validator("numa_nodes", mode="plain")
    @classmethod
    def _numa_nodes(cls, value: Any) -> Literal["auto"] | tuple[int, ...]:
        if value == "auto":
            return "auto"
        nodes = _NUMA_IDS.validate_python(value)
        if len(set(nodes)) != len(nodes):
            raise _refuse(f"lists a NUMA node twice ({_show(value)}): list each once")
        return tuple(sorted(nodes))

    @model_validator(mode="after")
    def _name_fits(self) -> Self:
        if self.kind == "dpdk-nic":
            return self
        try:
            naming.slot_device_id(self.name, MAX_NUMA_ID, self.slots_per_node - 1)
        except naming.InvalidName:
            longest = len(naming.slot_device_id("", MAX_NUMA_ID, self.slots_per_node - 1))
            raise _refuse(f"{_show(self.name)} is too long for device IDs (<pool>-n<numa>-"
                          f"<index>, at most {naming.MAX_DEVICE_ID} characters): use at most "
                          f"{naming.MAX_DEVICE_ID - longest} characters", "name") from None
        return self

    def record(self) -> PoolConfig:
        if self.kind == "dpdk-nic":  # _given makes sure it has selectors
            selectors = self.selectors.record() if self.selectors is not None else None
            return PoolConfig(name=self.name, kind=self.kind, selectors=selectors,
                              frontend=self.frontend)
        vhost = self.kind == "vhost-user"
        return PoolConfig(
            name=self.name, kind=self.kind, vswitch=_or_none(self.vswitch),
            mode=self.mode if vhost else None, role=None if vhost else self.role,
            memif_mode=None if vhost else self.memif_mode, slots_per_node=self.slots_per_node,
            numa_nodes=self.numa_nodes, ring_size=_or_none(self.ring_size),
            buffer_size=_or_none(self.buffer_size), frontend=self.frontend,
        )


_Pools = Annotated[list[_Pool], _must("a list of pools (each starting with '- name:')")]


class _Config(_Section):
    resource_prefix: Annotated[_Str, _must("a DNS subdomain such as numanet.io",
                                           naming.is_dns_subdomain)] = naming.DEFAULT_PREFIX
    hugepages: Annotated[_Hugepages, _NULL_IS_EMPTY] = Field(default_factory=_Hugepages)
    vswitches: Annotated[_Vswitches, _NULL_IS_EMPTY] = Field(default_factory=_Vswitches)
    # MISSING: no pools key, the default pools.
    pools: _Pools | MISSING = MISSING

    @field_validator("resource_prefix")
    @classmethod
    def _not_kubernetes(cls, value: str) -> str:
        if value == "kubernetes.io" or value.endswith(".kubernetes.io"):
            raise _refuse("the kubernetes.io domain is reserved for Kubernetes' own resources: "
                          "use your own domain such as numanet.io")
        return value

    @field_validator("pools")
    @classmethod
    def _distinct(cls, pools: list[_Pool]) -> list[_Pool]:
        if not pools:
            raise _refuse("is empty: add at least one pool, or remove the key to get the "
                          "default pools")
        seen: dict[str, int] = {}
        for i, pool in enumerate(pools):
            if pool.name in seen:
                raise _refuse(f"{_show(pool.name)} is already the name of pools[{seen[pool.name]}]"
                              ": pool names must be unique", i, "name")
            seen[pool.name] = i
        # NUMANET_<POOL>_NUMA of pool "a" is NUMANET_<POOL> of pool "a-numa": refuse the pair.
        owners: dict[str, int] = {}
        for i, pool in enumerate(pools):
            for env in (naming.pool_env_name(pool.name), naming.pool_numa_env_name(pool.name)):
                if env in owners and owners[env] != i:
                    raise _refuse(f"{_show(pool.name)} gives environment variable {env}, which "
                                  f"pools[{owners[env]}] also sets: rename one of the pools",
                                  i, "name")
                owners[env] = i
        return pools

    @model_validator(mode="after")
    def _dra_names_fit(self) -> Self:
        # A DRA pool's resource name is a ResourceSlice attribute value (Multus matches it
        # with the NAD's): the API server takes at most 64 characters there.
        for i, pool in enumerate([] if self.pools is MISSING else self.pools):
            resource = naming.resource_name(self.resource_prefix, pool.name)
            if pool.frontend == "dra" and len(resource) > naming.MAX_DRA_ATTRIBUTE_VALUE:
                raise _refuse(f"gives resource name {resource!r} ({len(resource)} characters), "
                              f"longer than the {naming.MAX_DRA_ATTRIBUTE_VALUE} a ResourceSlice "
                              "attribute takes: shorten the pool name for frontend: dra",
                              "pools", i, "name")
        return self

    def record(self) -> Config:
        pages, ovs, vpp = self.hugepages, self.vswitches.ovs, self.vswitches.vpp
        pools = default_pools() if self.pools is MISSING else tuple(p.record() for p in self.pools)
        return Config(
            resource_prefix=self.resource_prefix,
            hugepages=HugepagesConfig(pages.page_size, Path(pages.path), pages.required),
            ovs=OvsConfig(ovs.db, ovs.bridge, ovs.prepare_at_allocate),
            vpp=VppConfig(vpp.api_socket, vpp.api_dir),
            pools=pools,
        )
