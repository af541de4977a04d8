"""The demo, step by step: a node in a box, from pod request to packets on the wire.

preflight -> leftovers of a killed run -> hugepages -> private OVS-DPDK -> the numanet
agent with the kubelet stand-in -> two pods admitted (preferred allocation, Allocate) ->
Multus' part (the real CNI executable, host-local IPAM, a netns per pod) -> dpdk-testpmd
as each pod's application, configured from its numanet.json -> traffic through OVS ->
teardown, always, and the proof that nothing is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from agent.status_file import status_path
from demo import (
    cleanup,
    hugepages,
    multus,
    netns,
    preflight,
    procs,
    report,
    traffic,
)
from demo.console import Console
from demo.journal import Journal
from demo.kubelet_standin.kubelet import KubeletStandin
from demo.kubelet_standin.podresources import PodResourcesStandIn
from demo.layout import DEFAULT_DIR, POD_NAMES, POD_NAMESPACE, Layout
from demo.pods import Pod
from demo.report import Report
from demo.testpmd import BINARY, DPDK_RUNTIME_DIR, Settings, Testpmd
from deviceplugin import naming

PREFIX = "numanet.io"
BRIDGE = "br-numanet"
NETWORK = "numanet-demo"
SUBNET = "10.56.0.0/24"
SLOTS_PER_NODE = 8
# 2 MiB pages: OVS 128 MiB + 64 MiB per testpmd, and a little room.
HUGEPAGES = 144
# OVS gives a memif port (a DPDK port) a mempool sized for its queues: measured about
# 18 pages more per memif pod than per vhost-user pod; with room to spare.
MEMIF_EXTRA_PAGES = 24
OVS_SOCKET_MEM_MB = 128
TESTPMD_MEMORY_MB = 64
POOLS = {"vhost-user": "vhostuser-ovs", "memif": "memif-ovs"}


def hugepages_for(kinds: tuple[str, str]) -> int:
    """2 MiB pages to reserve for a demo whose pods have these interface kinds."""
    return HUGEPAGES + MEMIF_EXTRA_PAGES * sum(1 for kind in kinds if kind == "memif")


class DemoFailed(RuntimeError):
    """A step failed; the message says which and why."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived; unwinds to the teardown."""


@dataclass(frozen=True)
class Options:
    seconds: float = 5.0
    json: bool = False
    directory: Path = DEFAULT_DIR
    install: bool = False
    testpmd: str = BINARY
    cni_bin_dir: Path = Path("/usr/lib/cni")
    hugepages: int = HUGEPAGES  # 0: run without (--no-huge)
    # Interface kind of pod-a and pod-b. A memif pod on OVS must open as many queue pairs
    # as OVS sends on (one per PMD thread plus one); it learns that from numanet.json.
    kinds: tuple[str, str] = ("vhost-user", "vhost-user")


class Demo:
    def __init__(self, options: Options, console: Console) -> None:
        self.options = options
        self.console = console
        self.layout = Layout(options.directory)
        self.report = Report(str(self.layout.base))
        self.tally = cleanup.Tally()
        self.journal: Journal | None = None
        self.tools: preflight.Tools | None = None
        self.reservation: hugepages.Reservation | None = None
        self.ovs: Any = None  # demo.private_ovs.PrivateOvs
        self.kubelet: KubeletStandin | None = None
        self.podres: PodResourcesStandIn | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.pods: list[Pod] = []
        self.attached: list[tuple[Pod, multus.Attachment]] = []
        self.apps: dict[str, Testpmd] = {}
        self._teardown_started = False
        self._agent_started = 0.0

    # --- the run ------------------------------------------------------------------------

    def run(self) -> Report:
        """Run every step, then tear down whatever happened. Raises only for preflight."""
        from demo.private_ovs import PrivateOvs

        self.layout.check()
        self.ovs = PrivateOvs(self.layout.ovs_dir, hugepage_dir=None)  # for its names only
        with self.console.step("preflight") as step:
            self.tools = preflight.check(self.options.testpmd, self.options.cni_bin_dir,
                                         self.options.install)
            recovered = cleanup.recover(self.layout, self.ovs.dpdk_runtime_dir)
            step.detail = (f"root; OVS-DPDK, dpdk-testpmd, host-local, numanet CNI "
                           f"{Path(self.tools.numanet_cni).name} found")
            if recovered is not None:
                self.report.recovered = recovered.text()
                step.detail += ("\n         cleaned what a killed earlier demo left: "
                                f"{recovered.text()}")
        previous = {s: signal.signal(s, self._interrupt)
                    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            self.layout.base.mkdir(mode=0o700, parents=True, exist_ok=True)  # empty if there
            os.chmod(self.layout.base, 0o700)
            self.journal = Journal.create(self.layout.journal)
            self._steps()
            self.report.ok = True
        except Interrupted as exc:
            self.report.error = f"interrupted by {exc}"
            self.report.interrupted = True
        except Exception as exc:  # every failure still gets the teardown and the proof
            self.report.error = str(exc)
        finally:
            self._teardown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.report.steps = list(self.console.steps)
        return self.report

    def _steps(self) -> None:
        self._reserve_hugepages()
        self._start_ovs()
        self._start_agent()
        self._admit_pods()
        self._attach_networks()
        self._start_apps()
        self._pass_traffic()
        self._snapshot_numa()

    def _wait(self, what: str, timeout: float, ready: Callable[[], bool],
              check: Callable[[], None] | None = None) -> None:
        """Poll ``ready`` with a progress line; ``check`` raises when waiting is pointless."""
        started = time.monotonic()
        while not ready():
            if check is not None:
                check()
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise DemoFailed(f"gave up after {timeout:.0f} s waiting for {what}")
            self.console.progress(f"   waiting for {what} ({elapsed:.1f} s)")
            time.sleep(0.1)

    def _interrupt(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._teardown_started:
            self.console.line(f" ({name}: already cleaning up, one moment)")
            return
        raise Interrupted(name)

    # --- steps --------------------------------------------------------------------------

    def _reserve_hugepages(self) -> None:
        assert self.journal is not None
        with self.console.step("hugepages") as step:
            pages = self.options.hugepages
            reason = "--hugepages 0"
            if pages > 0:
                self.reservation, reason = hugepages.reserve(self.journal,
                                                             self.layout.hugepage_dir, pages)
            res = self.reservation
            if res is not None:
                step.detail = (f"{res.pages} x 2 MiB (nr_hugepages {res.original} -> "
                               f"{res.original + res.pages}), hugetlbfs at {res.mount}")
                self.report.hugepages = {"mode": "hugepages", "pages": res.pages,
                                         "original": res.original, "mount": str(res.mount)}
            else:
                self.layout.hugepage_dir.mkdir(mode=0o700, exist_ok=True)
                step.detail = f"none ({reason}): OVS and testpmd run with --no-huge"
                self.report.hugepages = {"mode": "no-huge", "reason": reason}

    def _start_ovs(self) -> None:
        from demo.private_ovs import PrivateOvs

        assert self.journal is not None
        with self.console.step("OVS-DPDK") as step:
            res = self.reservation
            self.ovs = PrivateOvs(self.layout.ovs_dir,
                                  hugepage_dir=res.mount if res else None,
                                  socket_mem_mb=OVS_SOCKET_MEM_MB if res else 1024)
            self.journal.add(dpdk_dir=str(self.ovs.dpdk_runtime_dir))
            # Its own network namespace: the netdev datapath's tap devices stay off the
            # host and cannot collide with another OVS (see demo.netns).
            with netns.private_network():
                self.ovs.start()
            for pid, name in ((self.ovs.ovsdb_pid, "ovsdb-server"),
                              (self.ovs.vswitchd_pid, "ovs-vswitchd-dpdk")):
                if pid:
                    self.journal.add(process=procs.identify(pid, name))
            pmd = _cpus_of_mask(self.ovs.pmd_cpu_mask)
            self.report.ovs = {"bridge": BRIDGE, "pmdCpus": pmd, "db": self.ovs.db,
                               "hugepages": res is not None}
            step.detail = (f"ovsdb-server + ovs-vswitchd-dpdk in their own netns, PMD on CPU "
                           f"{_fmt(pmd)}{'' if res else ', --no-huge'}")

    def _config(self) -> dict[str, Any]:
        pools: list[dict[str, Any]] = []
        nodes: Any = "auto"
        if self.reservation is None:
            import numa

            nodes = list(numa.discover("/sys").node_ids)  # auto needs hugepages on a node
        # Both socket pools on OVS, whichever kinds the pods use: the table shows both.
        for kind in POOLS:
            pool: dict[str, Any] = {"name": POOLS[kind], "kind": kind, "vswitch": "ovs",
                                    "slotsPerNode": SLOTS_PER_NODE, "numaNodes": nodes}
            if kind == "vhost-user":
                pool["mode"] = "server"  # OVS dpdkvhostuserclient: survives OVS restarts
            else:
                pool.update(role="slave", memifMode="ethernet")  # OVS is the memif master
            pools.append(pool)
        pages: dict[str, Any] = {"pageSize": "2Mi", "path": str(self.layout.hugepage_dir)}
        if self.reservation is None:
            pages["required"] = False  # the pods' testpmd runs with --no-huge too
        return {
            "resourcePrefix": PREFIX,
            "hugepages": pages,
            "vswitches": {"ovs": {"db": self.ovs.db, "bridge": BRIDGE}},
            "pools": pools,
        }

    def _start_agent(self) -> None:
        assert self.journal is not None
        with self.console.step("agent") as step:
            self.layout.config.write_text(yaml.safe_dump(self._config(), sort_keys=False))
            self.kubelet = KubeletStandin(self.layout.plugin_dir).start()
            self.podres = PodResourcesStandIn(self.layout.pod_resources_socket,
                                              allocations=self.kubelet.pod_allocations).start()
            self.layout.log_dir.mkdir(exist_ok=True)
            cmd = [sys.executable, "-m", "agent.cli", "agent",
                   "--config", str(self.layout.config),
                   "--kubelet-dir", str(self.layout.kubelet_dir),
                   "--run-dir", str(self.layout.run_dir), "--sysfs", "/sys",
                   "--devinfo-dir", str(self.layout.devinfo_dir),
                   "--pod-resources-socket", str(self.layout.pod_resources_socket),
                   "--metrics-address", "off", "--no-udev"]
            with open(self.layout.log_dir / "agent.log", "wb") as log:
                self.agent = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True)
            self._agent_started = time.monotonic()
            self.journal.add(process=procs.identify(self.agent.pid, "numanet agent"))
            resources = [f"{PREFIX}/{pool}" for pool in POOLS.values()]
            try:
                self._wait("the agent to register its pools with healthy slots and serve CNI",
                           30, lambda: all(self._healthy(r) for r in resources)
                           and self.layout.cni_socket.is_socket(), self._agent_ok)
            except DemoFailed as exc:
                raise DemoFailed(f"{exc}; the agent's log ends:\n{self._agent_log()}") from None
            counts = ", ".join(f"{r.split('/')[1]} ({len(self.kubelet.devices(r))} slots)"
                               for r in resources)
            # memif is served by OVS's net_memif ports here; VPP would be its usual home.
            step.detail = f"pid {self.agent.pid}, registered {counts} (no VPP here)"

    def _healthy(self, resource: str) -> bool:
        assert self.kubelet is not None
        return any(d.healthy for d in self.kubelet.devices(resource).values())

    def _agent_ok(self) -> None:
        """Fail early: the agent died, or it says why every slot is unhealthy."""
        if self.agent is not None and self.agent.poll() is not None:
            raise DemoFailed(f"the numanet agent exited with {self.agent.returncode}:\n"
                             f"{self._agent_log()}")
        assert self.kubelet is not None
        if time.monotonic() - self._agent_started < 10:
            return  # the first vSwitch health round may take a moment
        try:
            status = json.loads(status_path(self.layout.run_dir).read_text())
        except (OSError, ValueError):
            return
        for pool in status.get("pools", []):
            reasons = pool.get("unhealthy") or {}
            devices = self.kubelet.devices(pool.get("resource", ""))
            if reasons and devices and not any(d.healthy for d in devices.values()):
                raise DemoFailed(f"the agent reports every slot of {pool['name']} unhealthy: "
                                 f"{'; '.join(reasons)}")

    def _agent_log(self, lines: int = 12) -> str:
        try:
            text = (self.layout.log_dir / "agent.log").read_text(errors="replace")
        except OSError:
            return "(no agent log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def _admit_pods(self) -> None:
        assert self.kubelet is not None
        with self.console.step("kubelet") as step:
            for name, kind in zip(POD_NAMES, self.options.kinds, strict=True):
                pod = Pod(POD_NAMESPACE, name, POOLS[kind], f"{PREFIX}/{POOLS[kind]}",
                          self.layout.netns(name))
                pod.admit(self.kubelet)
                self.pods.append(pod)
            step.detail = ", ".join(f"{p.name} <- {p.device_id}" for p in self.pods) + \
                " (preferred allocation, Allocate)"

    def _attach_networks(self) -> None:
        assert self.journal is not None and self.tools is not None
        with self.console.step("Multus") as step:
            if not netns.NETNS_DIR.exists():
                self.journal.created_netns_dir = True  # ip netns add creates and mounts it
            for pod in self.pods:
                assert pod.device_id is not None
                self.journal.add(netns=pod.netns)
                attachment = multus.Attachment(
                    pod.namespace, pod.name, pod.uid, pod.sandbox_id, netns.add(pod.netns),
                    "net1", pod.device_id,
                    self.layout.cni_devinfo_dir / f"{pod.namespace}-{pod.name}-net1.json")
                self.attached.append((pod, attachment))
                multus.call(self.tools.numanet_cni, "ADD", self._network(pod), attachment,
                            self.tools.cni_bin_dir, self.layout.cni_socket)
                iface = pod.read_interface()
                if iface.kind == "memif" and iface.queues is None:
                    raise DemoFailed(
                        f"{pod.ref}: numanet.json of {pod.device_id} does not say how many "
                        "queue pairs to open ('queues'); OVS sends memif traffic on one queue "
                        "per PMD thread plus one, so a one-queue pod would receive nothing. "
                        "The agent and numanet-cni must be the same numanet release")
                slot_dir = naming.slot_dir(self.layout.run_dir, pod.device_id)
                if iface.socket.parent != slot_dir:
                    raise DemoFailed(f"{pod.ref}: numanet.json names socket {iface.socket}, "
                                     f"not in its slot directory {slot_dir}")
            ips = ", ".join(ip for p in self.pods if p.interface for ip in p.interface.ips)
            step.detail = f"numanet-cni ADD x2: ports on {BRIDGE}, host-local IPs {ips}"

    def _network(self, pod: Pod) -> multus.Network:
        """The NetworkAttachmentDefinition's config: one network, the pod's resource."""
        return multus.Network(NETWORK, pod.resource, SUBNET, self.layout.ipam_dir)

    def _start_apps(self) -> None:
        assert self.journal is not None and self.tools is not None
        with self.console.step("pods' apps") as step:
            a, b = self.pods
            assert a.interface and b.interface
            for pod, peer in ((a, b), (b, None)):
                iface = pod.interface
                assert iface is not None
                huge = (pod.host_path(str(self.layout.hugepage_dir))
                        if self.reservation else None)
                # The pod's own kit gives the EAL arguments (numanet-app dpdk-args), run in
                # the pod's mounts, environment and CPUs.
                settings = Settings(
                    file_prefix=self.layout.testpmd_prefix(pod.name), mounts=pod.mounts,
                    env=pod.env, cpus=traffic.app_cpus(iface.numa_node, len(self.apps)),
                    memory_mb=TESTPMD_MEMORY_MB,
                    eth_peer=peer.interface.mac if peer and peer.interface else None,
                    netns=pod.netns, binary=self.tools.testpmd)
                self.journal.add(dpdk_dir=str(DPDK_RUNTIME_DIR / settings.file_prefix))
                app = Testpmd.for_pod(settings, huge,
                                      self.layout.log_dir / f"testpmd-{pod.name}.log")
                self.apps[pod.name] = app
                pid = app.launch()
                with contextlib.suppress(ProcessLookupError):
                    self.journal.add(process=procs.identify(pid, "dpdk-testpmd"))
            for app in self.apps.values():
                app.wait_ready()
            self._wait("the links come up (OVS connects to the pods' sockets)", 30,
                       lambda: all(app.link_up() for app in self.apps.values()))
            queues = sorted({p.interface.queues for p in self.pods
                             if p.interface and p.interface.queues})
            step.detail = ("dpdk-testpmd x2, EAL arguments from numanet-app dpdk-args"
                           + (f" (memif: {'/'.join(map(str, queues))} queue pairs)"
                              if queues else "") + "; links up")

    def _pass_traffic(self) -> None:
        a_pod, b_pod = self.pods
        with self.console.step("traffic") as step:
            result = traffic.measure(self.apps[a_pod.name], self.apps[b_pod.name],
                                     (a_pod.name, b_pod.name), self.options.seconds,
                                     self.console.progress)
            self.report.traffic = {
                "seconds": round(result.seconds, 2),
                "path": f"{a_pod.ref} -> OVS {BRIDGE} (NORMAL) -> {b_pod.ref} and back",
                "aToB": {**result.a_to_b.to_json(), "from": a_pod.ref, "to": b_pod.ref},
                "bToA": {**result.b_to_a.to_json(), "from": b_pod.ref, "to": a_pod.ref},
            }
            step.detail = f"{traffic.describe(result)} through OVS"

    def _snapshot_numa(self) -> None:
        """Slots used/free per NUMA node from the running agent, and the pods' interfaces."""
        pmd = set(self.report.ovs.get("pmdCpus", []))
        self.report.numa = report.numa_rows(status_path(self.layout.run_dir), pmd)
        self.report.pods = [report.pod_row(pod) for pod in self.pods]

    # --- teardown -----------------------------------------------------------------------

    def _teardown(self) -> None:
        """Undo every step, in reverse, each even when an earlier one fails; then prove it."""
        self._teardown_started = True
        with self.console.step("teardown") as step:
            self.tally.add("sockets", cleanup.count_sockets(self.layout.base))
            for what, action in (("stopping testpmd", self._stop_apps),
                                 ("CNI DEL", self._detach_networks),
                                 ("stopping the agent", self._stop_kubelet_and_agent),
                                 ("stopping OVS", self._stop_ovs)):
                try:
                    action()
                except Exception as exc:  # the rest of the teardown must still run
                    self.tally.notes.append(f"{what} failed: {exc}")
            hugepage_record = self.journal.hugepages if self.journal else None
            sysctl = hugepage_record.sysctl if hugepage_record else None
            names = [p.netns for p in self.pods] + (self.journal.netns if self.journal else [])
            sweep = cleanup.Tally()
            cleanup.sweep(self.layout, self.journal, self.ovs.dpdk_runtime_dir, sweep,
                          list(dict.fromkeys(names)))
            for kind in ("netns", "mounts", "hugepages"):
                self.tally.add(kind, sweep.counts.get(kind, 0))
            self.tally.notes += sweep.notes
            if sweep.hugepages_after is not None:
                self.report.hugepages["restoredTo"] = sweep.hugepages_after
            # The count must stay where the demo put it back (another user may move it).
            self.report.left += cleanup.leftovers(self.layout, self.ovs.dpdk_runtime_dir,
                                                  sweep.hugepages_after, sysctl)
            self.report.cleaned = dict(self.tally.counts)
            self.report.cleanup_notes = list(self.tally.notes)
            step.detail = "CNI DEL, stop testpmd, agent and OVS, unmount, give pages back" + (
                "" if not self.report.left else f"; LEFT: {'; '.join(self.report.left)}")

    def _stop_apps(self) -> None:
        for app in self.apps.values():
            was_running = app.running()
            app.close()
            self.tally.add("processes", int(was_running))

    def _detach_networks(self) -> None:
        if not self.attached or self.tools is None:
            return
        ports_before = self._numanet_ports()
        leases_before = multus.leases(self.layout.ipam_dir, NETWORK)
        for pod, attachment in reversed(self.attached):
            try:
                multus.call(self.tools.numanet_cni, "DEL", self._network(pod), attachment,
                            self.tools.cni_bin_dir, self.layout.cni_socket)
            except multus.CniFailed as exc:
                self.tally.notes.append(str(exc))
        ports_after = self._numanet_ports()
        leases_after = multus.leases(self.layout.ipam_dir, NETWORK)
        self.tally.add("ports", len(ports_before) - len(ports_after))
        self.tally.add("IPAM leases", len(leases_before) - len(leases_after))
        self.report.left += [f"OVS port {p}" for p in ports_after]
        self.report.left += [f"IPAM lease {lease}" for lease in leases_after]
        devinfo = [a.devinfo_file for _, a in self.attached if a.devinfo_file.exists()]
        self.report.left += [f"device-info file {f}" for f in devinfo]

    def _numanet_ports(self) -> list[str]:
        """Ports numanet owns on the demo's OVS (its owner tag), read with ovs-vsctl."""
        if self.ovs is None or not self.ovs.vswitchd_alive():
            return []
        try:
            out = self.ovs.vsctl("--columns=name", "--format=json", "find", "Interface",
                                 "external_ids:numanet-owner=numanet", wait=False)
        except RuntimeError:
            return []
        return [row[0] for row in json.loads(out).get("data", [])]

    def _stop_kubelet_and_agent(self) -> None:
        if self.kubelet is not None:
            for pod in self.pods:
                self.kubelet.remove_pod(pod.namespace, pod.name)
        if self.agent is not None:
            if self.agent.poll() is None:
                self.agent.terminate()
                try:
                    self.agent.wait(15)
                except subprocess.TimeoutExpired:
                    self.agent.kill()
                    self.agent.wait()
                self.tally.add("processes")
        for server in (self.podres, self.kubelet):
            if server is not None:
                server.stop()

    def _stop_ovs(self) -> None:
        if self.ovs is None:
            return
        running = int(self.ovs.ovsdb_pid is not None) + int(self.ovs.vswitchd_pid is not None)
        self.ovs.stop()
        self.tally.add("processes", running)


def _cpus_of_mask(mask: str) -> list[int]:
    value = int(mask, 16)
    return [cpu for cpu in range(value.bit_length()) if value >> cpu & 1]


def _fmt(cpus: list[int]) -> str:
    return ",".join(map(str, cpus)) or "?"
