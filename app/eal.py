"""DPDK EAL arguments for this container's interfaces::

    dpdk-testpmd $(numanet-app dpdk-args) -- ...

One ``--vdev`` per socket (``virtio_user<N>`` for vhost-user, ``net_memif<N>`` for memif,
N the interface's place in the list, so port N is interface N when there is no NIC),
``-a <pci>`` per NIC or ``--no-pci`` (else DPDK probes every NIC it can see), lcores and
hugepages on the interfaces' NUMA node, and a ``--file-prefix`` of the container's own:
pods share the host's hugetlbfs, where DPDK names its page files after the prefix.

``eal_args(view, options)`` is the function for Python callers (the demo).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app import hugepages
from app.errors import AppError
from app.hugepages import Memory
from app.placement import place
from app.sysfs import format_cpulist
from app.view import Interface, PodView

MAX_LCORE = 128  # RTE_MAX_LCORE of distribution builds: -l takes CPU numbers below it
MAX_MEMIF_LOG2_RING = 14  # net_memif's largest ring: 2^14 descriptors
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MEMIF_ROLES = {"slave": "client", "master": "server"}  # container's role -> DPDK's


@dataclass(frozen=True)
class EalOptions:
    lcores: int | None = None  # None: every CPU of the container on the interfaces' node
    file_prefix: str | None = None  # None: numanet-<first device ID>
    memory_mib: int | None = None  # None: the container's hugepages (or 512 MiB)
    huge_dir: str | None = None  # None: found in /proc/mounts
    cross_numa: bool = False  # go on when interfaces, CPUs and memory span NUMA nodes
    testpmd: bool = False  # give every virtio port the queue count testpmd will open


@dataclass(frozen=True)
class EalPlan:
    args: tuple[str, ...]
    testpmd_args: tuple[str, ...]  # testpmd options (after --) the interfaces need
    warnings: tuple[str, ...] = ()


def eal_args(view: PodView, options: EalOptions | None = None) -> list[str]:
    """The EAL arguments for ``view`` (``app.view.read_view``); AppError when the pod's
    interfaces, CPUs or hugepages do not fit together."""
    return list(plan(view, options or EalOptions()).args)


def plan(view: PodView, options: EalOptions) -> EalPlan:
    placement = place(view, options.lcores, options.cross_numa)
    interfaces = view.interfaces
    memory = hugepages.choose(list(view.huge_mounts), dict(view.huge_budget), options.huge_dir,
                              options.memory_mib)
    queues = max((i.queues or 1 for i in interfaces if i.kind != "dpdk-nic"), default=1)
    args = _lcore_args(placement.cpus)
    args.append(f"--file-prefix={file_prefix(view, options.file_prefix)}")
    args += _memory_args(memory, placement.nodes, any(i.kind == "vhost-user" for i in interfaces))
    nics = [i for i in interfaces if i.kind == "dpdk-nic"]
    for nic in nics:
        args += ["-a", str(nic.pci_address)]
    if not nics:
        args.append("--no-pci")
    sockets = [i for i in interfaces if i.kind != "dpdk-nic"]
    for index, iface in enumerate(sockets):
        args.append(f"--vdev={vdev(iface, index, queues if options.testpmd else None)}")
    testpmd = [f"--rxq={queues}", f"--txq={queues}"] if queues > 1 else []
    warnings = list(placement.warnings) + ([memory.note] if memory.note else [])
    return EalPlan(tuple(args), tuple(testpmd), tuple(warnings))


def file_prefix(view: PodView, given: str | None) -> str:
    """The given prefix, checked; else from the first device ID, which no other container
    on the node holds while this one runs (a restarted container gets the same one and
    DPDK reclaims its own leftovers)."""
    if given is None:
        first = next((i.device_id for i in view.interfaces if i.device_id), None)
        base = first or view.hostname or "numanet"
        given = "numanet-" + re.sub(r"[^A-Za-z0-9_-]", "-", base)[:55]
    if not _PREFIX.match(given):
        raise AppError(f"--file-prefix {given!r} is not a file name DPDK can use",
                       "use letters, digits, '.', '_' and '-', at most 64, starting with a "
                       "letter or digit")
    return given


def vdev(iface: Interface, index: int, queues: int | None = None) -> str:
    """The ``--vdev`` value of one socket interface; ``queues`` for a virtio port whose
    numanet.json gives none (testpmd opens one count on every port)."""
    if not iface.socket:
        raise AppError(f"{iface.label}: no socket path is known",
                       "its numanet.json or device-info must name one; recreate the pod")
    mac = f",mac={iface.mac}" if iface.mac else ""
    if iface.kind == "vhost-user":
        if iface.role not in ("server", "client"):
            raise AppError(f"{iface.label}: vhost-user mode {iface.role!r} is neither server "
                           "nor client", "use the numanet-app of the agent's release")
        # server: the container (virtio_user) creates the socket and the vSwitch connects.
        server = ",server=1" if iface.role == "server" else ""
        count = iface.queues or (queues if queues and queues > 1 else None)
        extra = (f",queues={count}" if count else "") + (
            f",queue_size={iface.ring_size}" if iface.ring_size else "")
        return f"virtio_user{index},path={iface.socket}{server}{extra}{mac}"
    if iface.kind == "memif":
        if iface.memif_mode == "ip":
            raise AppError(f"{iface.label} is a memif in mode ip, which DPDK's net_memif does "
                           "not speak (it is ethernet only)",
                           "use a pool with memifMode ethernet for DPDK apps, or VPP "
                           "(numanet-app vpp-config)")
        role = _MEMIF_ROLES.get(iface.role or "")
        if role is None:
            raise AppError(f"{iface.label}: memif role {iface.role!r} is neither slave nor "
                           "master", "use the numanet-app of the agent's release")
        sizes = ""
        if iface.ring_size:
            log2 = iface.ring_size.bit_length() - 1
            if 1 << log2 != iface.ring_size or log2 > MAX_MEMIF_LOG2_RING:
                raise AppError(f"{iface.label}: ring size {iface.ring_size} is not one DPDK's "
                               f"net_memif takes (a power of two up to {1 << MAX_MEMIF_LOG2_RING})",
                               "lower the pool's ringSize")
            sizes += f",rsize={log2}"
        if iface.buffer_size:
            sizes += f",bsize={iface.buffer_size}"
        return (f"net_memif{index},role={role},id={iface.memif_id or 0},socket={iface.socket},"
                f"socket-abstract=no{sizes}{mac}")
    raise AppError(f"{iface.label}: a {iface.kind} interface has no DPDK vdev",
                   "use the numanet-app of the agent's release")


def _lcore_args(cpus: tuple[int, ...]) -> list[str]:
    """``-l`` with CPU numbers, the main lcore named when it is not the lowest; CPUs past
    RTE_MAX_LCORE need lcore IDs mapped onto them (``--lcores=0@130,1@131``)."""
    if max(cpus) >= MAX_LCORE:
        return ["--lcores=" + ",".join(f"{n}@{cpu}" for n, cpu in enumerate(cpus))]
    args = ["-l", format_cpulist(cpus)]
    if cpus[0] != min(cpus):
        args.append(f"--main-lcore={cpus[0]}")
    return args


def _memory_args(memory: Memory, nodes: tuple[int, ...], vhost_user: bool) -> list[str]:
    if memory.mount is None:
        # --no-huge: DPDK maps one shared memfd, which vhost-user can hand to the vSwitch.
        return ["--no-huge", "-m", str(memory.mib)]
    args = [f"--huge-dir={memory.mount.path}"]
    if nodes:
        page = max(1, memory.mount.page_kib // 1024)
        each = memory.mib // len(nodes) // page * page
        if each < page:
            raise AppError(f"{memory.mib} MiB of {page} MiB hugepages cannot be split over "
                           f"NUMA nodes {', '.join(map(str, nodes))}",
                           "give more --memory, or use interfaces on one node")
        per_node = ["0"] * (max(nodes) + 1)
        for node in nodes:
            per_node[node] = str(each)
        args.append(f"--socket-mem={','.join(per_node)}")
    else:  # nodes unknown (a NIC whose sysfs says -1): let DPDK place it
        args += ["-m", str(memory.mib)]
    if vhost_user:
        # vhost-user maps every memory file of the app into the vSwitch, at most 8 of them:
        # one file per hugepage would exceed that.
        args.append("--single-file-segments")
    return args
