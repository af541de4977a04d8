"""Every name and path numanet derives from a pool or a device ID, in one place.

DESIGN.md fixes these; anything that builds a device ID, a slot directory, a resource
name or an environment variable name calls this module, and every ID that comes from
outside (kubelet, Multus, a pod) passes ``validate_device_id`` before it touches a path.
"""

from __future__ import annotations

import re
from pathlib import Path

from vswitch.api import MAX_SLOT_ID, SLOT_ID

DEFAULT_PREFIX = "numanet.io"
DEFAULT_RUN_DIR = Path("/run/numanet")
DEFAULT_KUBELET_DIR = Path("/var/lib/kubelet")
CONTAINER_RUN_DIR = Path("/run/numanet")
DEVINFO_DIR = Path("/var/run/k8s.cni.cncf.io/devinfo/dp")
CDI_DIR = Path("/var/run/cdi")  # where container runtimes read CDI specs
SOCKET_NAME = "sock"
CONTAINER_CONFIG_NAME = "numanet.json"
MAX_DEVICE_ID = MAX_SLOT_ID

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class InvalidName(ValueError):
    """An ID or name from outside that numanet refuses; the message says why and what to do."""


def is_dns_label(name: str) -> bool:
    return bool(_DNS_LABEL.fullmatch(name))


def is_dns_subdomain(name: str) -> bool:
    """Lower-case letters, digits, '-' and '.', at most 253 characters: a resource prefix,
    the name of a Kubernetes object."""
    return bool(_DNS_SUBDOMAIN.fullmatch(name))


def validate_pool_name(name: str) -> str:
    """A pool name from outside (a claim's DRA pool), refused unless it is a DNS label."""
    if not isinstance(name, str) or not is_dns_label(name):
        raise InvalidName(
            f"pool name {name!r} is not a DNS label: use lower-case letters, digits and '-', "
            "at most 63 characters, starting and ending with a letter or digit"
        )
    return name


def validate_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not is_dns_subdomain(prefix):
        raise InvalidName(f"resource prefix {prefix!r} is not a DNS subdomain such as numanet.io")
    return prefix


def slot_device_id(pool: str, numa_node: int, index: int) -> str:
    """``<pool>-n<numa>-<index>``: stable, so the kubelet's checkpoint stays valid across
    restarts."""
    device_id = f"{pool}-n{numa_node}-{index:03d}"
    if len(device_id) > MAX_DEVICE_ID:
        raise InvalidName(
            f"device ID {device_id!r} is longer than {MAX_DEVICE_ID} characters: "
            f"shorten pool {pool!r}"
        )
    return device_id


def is_pci_address(value: str) -> bool:
    return bool(_PCI_ADDRESS.fullmatch(value))


def validate_device_id(device_id: object) -> str:
    """Accept a slot ID or a PCI address; anything else (``..``, ``/``, too long) is refused."""
    if not isinstance(device_id, str) or not device_id:
        raise InvalidName(f"device ID {device_id!r} is empty or not a string")
    if len(device_id) > MAX_DEVICE_ID:
        raise InvalidName(f"device ID {device_id[:80]!r} is longer than {MAX_DEVICE_ID} characters")
    if SLOT_ID.fullmatch(device_id) or _PCI_ADDRESS.fullmatch(device_id):
        return device_id
    raise InvalidName(
        f"device ID {device_id!r} is neither a numanet slot ID (<pool>-n<numa>-<index>) "
        "nor a PCI address (0000:00:00.0)"
    )


def parse_slot_id(device_id: str) -> tuple[str, int, int]:
    """(pool, numa node, index) of a slot ID; raises InvalidName for anything else."""
    match = SLOT_ID.fullmatch(validate_device_id(device_id))
    if not match:
        raise InvalidName(f"device ID {device_id!r} is not a slot ID (<pool>-n<numa>-<index>)")
    return match["pool"], int(match["numa"]), int(match["index"])


def resource_name(prefix: str, pool: str) -> str:
    return f"{prefix}/{pool}"


def plugin_socket_name(pool: str) -> str:
    return f"numanet-{pool}.sock"


def slot_dir(run_dir: Path, device_id: str) -> Path:
    """Host directory of a slot: short, because unix socket paths stop at 107 bytes."""
    return Path(run_dir) / "s" / validate_device_id(device_id)


def container_slot_dir(pool: str, device_id: str) -> Path:
    return CONTAINER_RUN_DIR / pool / validate_device_id(device_id)


def cni_socket(run_dir: Path) -> Path:
    return Path(run_dir) / "cni.sock"


def devinfo_path(resource: str, device_id: str, devinfo_dir: Path = DEVINFO_DIR) -> Path:
    """Device-info file of the Multus convention: resource with '/' as '-', then the ID."""
    name = f"{resource.replace('/', '-')}-{validate_device_id(device_id)}-device.json"
    return Path(devinfo_dir) / name


def _env_token(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", value).upper()


def pool_env_name(pool: str) -> str:
    """``NUMANET_<POOL>``: comma-separated device IDs of that pool."""
    return f"NUMANET_{_env_token(pool)}"


def pool_numa_env_name(pool: str) -> str:
    """``NUMANET_<POOL>_NUMA``: comma-separated NUMA nodes of the container's devices."""
    return f"{pool_env_name(pool)}_NUMA"


def pci_env_name(prefix: str, pool: str) -> str:
    """``PCIDEVICE_<PREFIX>_<POOL>``, the name SR-IOV users already know."""
    return f"PCIDEVICE_{_env_token(prefix)}_{_env_token(pool)}"


# --- DRA (dra/): ResourceSlice names ----------------------------------------------------

MAX_DRA_ATTRIBUTE_VALUE = 64  # the API server's limit on a string attribute
_DRA_PCI_NAME = re.compile(r"^pci-([0-9a-f]{4})-([0-9a-f]{2})-([0-9a-f]{2})-([0-7])$")


def dra_device_name(device_id: str) -> str:
    """A device's name in a ResourceSlice (a DNS label): a slot ID as it is, a PCI address
    ``0000:3b:00.1`` as ``pci-0000-3b-00-1``."""
    validate_device_id(device_id)
    if is_pci_address(device_id):
        return "pci-" + re.sub(r"[:.]", "-", device_id)
    return device_id


def device_id_of_dra_name(name: str) -> str:
    """The device ID behind a ResourceSlice device name (``dra_device_name`` reversed);
    raises InvalidName for a name numanet never publishes."""
    if not isinstance(name, str):
        raise InvalidName(f"DRA device name {name!r} is not a string")
    match = _DRA_PCI_NAME.fullmatch(name)
    if match:
        return f"{match[1]}:{match[2]}:{match[3]}.{match[4]}"
    if is_pci_address(name) or not is_dns_label(name):
        raise InvalidName(f"DRA device name {name!r} is not one numanet publishes")
    return validate_device_id(name)


def dra_pool_name(node: str, pool: str) -> str:
    """A pool's name in the node's ResourceSlices: ``<node>/<pool>`` (unique in the
    cluster, as the DRA pool name of a (driver, pool, device) triple must be)."""
    return f"{node}/{validate_pool_name(pool)}"


def pool_of_dra_pool(dra_pool: str) -> str:
    """The numanet pool of a DRA pool name (``dra_pool_name`` reversed)."""
    return dra_pool.rsplit("/", 1)[-1]
