"""``numanet agent``: the node agent that wires the device plugin together.

Start order: config (a bad file stops here with one line and exit code 2) -> topology ->
vSwitch monitor (connects in the background, one thread per vSwitch; a vSwitch that is
absent or down only makes its slots Unhealthy, and is retried) -> resource manager ->
status file and metrics -> one gRPC server per device-plugin pool, registered with the
kubelet and re-registered after kubelet restarts -> for pools with ``frontend: dra`` the
DRA front end (dra/: ResourceSlices published, the kubelet DRA plugin) -> the CNI
service on ``<run-dir>/cni.sock``, and the adoption of the attachments the CNI recorded
before this start (at once for the healthy vSwitches, later for the others) -> a
refresher that re-reads topology, vSwitch health and the config file every
``--refresh-interval`` seconds and at once on udev events (NICs only on udev events and
every ``--nic-rescan-interval`` seconds: agent/topology_scan.py). SIGTERM or
SIGINT stops it all in reverse order, removing the plugin sockets, the CNI socket, the
device-info files and the status file it created (CDI specs stay for container
restarts), and the DRA front end its ResourceSlices.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import metrics
from agent.config_file import DEFAULT_CONFIG_PATH, ConfigError, load_config
from agent.status_file import StatusWriter, build_status, pool_usage, status_path
from agent.topology_scan import DEFAULT_NIC_INTERVAL, TopologyScanner
from agent.vswitches import Factory, VSwitchMonitor, default_factory
from cni import reconcile, replay
from cni.prepare import prepare_ports, remove_prepared
from cni.service import start_agent_service
from deviceplugin import naming
from deviceplugin.allocate import Allocator, AllocatorSettings
from deviceplugin.config import MAX_NUMA_ID, Config
from deviceplugin.kubelet_watch import PluginSupervisor
from deviceplugin.manager import ResourceManager
from deviceplugin.registration import DEVICE_PLUGINS_SUBDIR
from deviceplugin.slots import Slot
from deviceplugin.state import AllocationStore
from vswitch.api import VSwitch

log = logging.getLogger("numanet.agent")

# The longest unix socket path the kernel takes (sun_path is 108 bytes with the NUL).
_MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class AgentOptions:
    config_path: Path = DEFAULT_CONFIG_PATH
    kubelet_dir: Path = naming.DEFAULT_KUBELET_DIR
    run_dir: Path = naming.DEFAULT_RUN_DIR
    sysfs: Path = Path("/sys")
    devinfo_dir: Path = naming.DEVINFO_DIR
    cdi_dir: Path | None = None
    pod_resources_socket: Path | None = None  # default <kubelet-dir>/pod-resources/kubelet.sock
    metrics_address: str | None = None  # host:port, "off" to disable; default from metrics
    slot_group: int | None = None
    refresh_interval: float = 1.0
    nic_rescan_interval: float = DEFAULT_NIC_INTERVAL
    # Seconds between releases of allocations no pod holds (cni/reconcile.py), for
    # runtimes that never call CNI GC.
    reconcile_interval: float = 300.0
    udev: bool = True
    vswitch_factory: Factory = field(default=default_factory, compare=False)
    # DRA pools (frontend: dra): this node's name in the API, how to reach the API server
    # (None: the pod's service account) and where claims' CDI specs go.
    node_name: str = field(default_factory=lambda: os.environ.get("NODE_NAME")
                           or socket.gethostname())
    kubeconfig: Path | None = None
    dra_cdi_dir: Path = naming.CDI_DIR

    @property
    def plugin_dir(self) -> Path:
        return self.kubelet_dir / DEVICE_PLUGINS_SUBDIR

    @property
    def pod_resources(self) -> Path:
        return self.pod_resources_socket or self.kubelet_dir / "pod-resources" / "kubelet.sock"


class Agent:
    """The running agent. The CNI service reads ``manager`` (a SlotLookup) and ``vswitches``."""

    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.config: Config = load_config(options.config_path)
        self._config_stamp = _stamp(options.config_path)
        self.started_at = time.time()
        self.manager = ResourceManager(options.run_dir, AllocationStore(options.run_dir))
        self.allocator = Allocator(AllocatorSettings(
            run_dir=options.run_dir, devinfo_dir=options.devinfo_dir, cdi_dir=options.cdi_dir,
            slot_group=options.slot_group), self.manager)
        self.vswitch_monitor = VSwitchMonitor(options.vswitch_factory, str(options.sysfs),
                                              on_change=self.wake)
        self.plugins = PluginSupervisor(self.manager, self.allocator, options.plugin_dir,
                                        on_registered=self._on_registered)
        self.status_writer = StatusWriter(status_path(options.run_dir), self.status)
        self.cni_service: Any = None  # set by _start_cni_service
        self.dra: Any = None  # dra.frontend.DraFrontend while DRA pools are configured
        self.metrics_server: metrics.MetricsServer | None = None
        self._metrics_view = metrics.AgentView(self._slot_rows, self._vswitch_rows)
        self._hotplug: Any = None
        self._wake = threading.Event()
        self._next_reconcile = time.monotonic() + options.reconcile_interval
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    @property
    def vswitches(self) -> Mapping[str, VSwitch]:
        """vSwitch name ("ovs", "vpp") -> backend, for every vSwitch the pools use."""
        return self.vswitch_monitor.backends()

    # --- lifecycle ---

    def start(self) -> None:
        opts = self.options
        opts.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(opts.run_dir, 0o755)
        self._check_socket_paths()
        self.scanner = TopologyScanner(opts.sysfs, opts.nic_rescan_interval)
        topology = self.scanner.scan()
        for warning in topology.warnings:
            log.warning("topology warning: %s", warning)
        loaded = self.manager.allocations.load()
        self.vswitch_monitor.configure(self.config)
        self.vswitch_monitor.start()
        self.vswitch_monitor.wait_first_round(timeout=3.0)
        self.manager.update(self.config, topology, self.vswitch_monitor.states())
        restored = self.allocator.restore()
        log.info("agent starting config=%s pools=%s numa_nodes=%s allocations_on_disk=%d "
                 "devinfo_restored=%d", opts.config_path, ",".join(self.manager.pool_names()),
                 ",".join(map(str, topology.node_ids)), len(loaded), restored)
        self.manager.subscribe(self.status_writer.mark_dirty)
        self.status_writer.start()
        self._start_metrics()
        self.plugins.sync(self._device_plugin_pools())
        self.plugins.start()
        self._maybe_start_dra()
        self._start_cni_service()
        self._refresher = threading.Thread(target=self._refresh_loop, name="refresher",
                                           daemon=True)
        self._refresher.start()
        self._start_hotplug()

    def stop(self) -> None:
        """Stop in reverse order; every step runs even if an earlier one fails."""
        log.info("agent stopping")
        steps = [
            ("hotplug", self._stop_hotplug),
            ("refresher", self._stop_refresher),
            ("cni service", self._stop_cni_service),
            ("DRA front end", self._stop_dra),
            ("device plugins", self.plugins.stop),
            ("device-info files", self.allocator.cleanup),
            ("metrics", self._stop_metrics),
            ("status file", self.status_writer.stop),
            ("vswitches", self.vswitch_monitor.stop),
        ]
        for what, step in steps:
            try:
                step()
            except Exception:
                log.exception("stopping failed step=%s", what)
        log.info("agent stopped")

    def wake(self) -> None:
        """Ask the refresher for a round now (udev event, vSwitch state change)."""
        self._wake.set()

    def refresh(self) -> None:
        """One round: config file, topology, vSwitch states -> manager -> servers."""
        self._maybe_reload_config()
        try:
            topology = self.scanner.scan()
        except OSError as exc:
            log.error("topology scan failed, keeping the previous view error=%s", exc)
            return
        result = self.manager.update(self.config, topology, self.vswitch_monitor.states())
        if result.added or result.removed or self._resources_changed():
            self.plugins.sync(self._device_plugin_pools())
        self._maybe_start_dra()
        self.status_writer.mark_dirty()
        self._maybe_reconcile()

    def _maybe_reconcile(self) -> None:
        """Every ``reconcile_interval``: release what the kubelet freed, off this thread
        (it asks the kubelet, which may take its timeout)."""
        service = self.cni_service
        now = time.monotonic()
        if service is None or now < self._next_reconcile:
            return
        self._next_reconcile = now + self.options.reconcile_interval
        try:
            # Read at each round (tests shorten it).
            service.context.background.submit(reconcile.release_unheld, service.context,
                                              reconcile.PERIODIC_MIN_AGE, confirmed=True)
        except RuntimeError:  # the CNI service is stopping
            pass

    def status(self) -> dict[str, Any]:
        status = build_status(self.manager, self.plugins.status(), self.vswitch_monitor.states(),
                              self.started_at, str(self.options.config_path))
        if self.dra is not None:
            status["dra"] = self.dra.status()
        return status

    # --- CNI service hook ---------------------------------------------------------------
    # The CNI service (cni.service) runs inside the agent. What it uses from the agent:
    #   self.manager                 SlotLookup (slot(device_id), pool_resource(pool))
    #   self.vswitches               name -> VSwitch backend ("ovs", "vpp"), read per call
    #   self.allocator               all() / release(device_id): GC of devices no pod holds;
    #                                on_allocated: ports prepared at Allocate (cni/prepare.py)
    #   naming.cni_socket(run_dir), options.pod_resources, options.devinfo_dir.parent
    # Started once the device plugins are registered; stopped before them.
    #
    # Ports after restarts (one owner each, see agent/vswitches.py and cni/replay.py):
    # the first time each vSwitch backend is healthy the CNI records are adopted (ports the
    # vSwitch kept are taken over, lost ones plugged again, those no pod holds removed);
    # after a VPP restart the VPP backend replays its own slots and the agent does nothing;
    # after an OVS outage the records are plugged again (a no-op while OVS kept them).

    def _start_cni_service(self) -> None:
        service = start_agent_service(
            slots=self.manager, vswitches=self.vswitch_monitor.backends,
            run_dir=self.options.run_dir, pod_resources_socket=self.options.pod_resources,
            devinfo_root=self.options.devinfo_dir.parent, allocations=self.allocator,
            vswitch_down=self.vswitch_monitor.down_reason)
        self.cni_service = service
        log.info("CNI service listening socket=%s", naming.cni_socket(self.options.run_dir))

        def adopt_ports(name: str, _backend: VSwitch) -> None:
            if self.cni_service is service:
                replay.adopt(service.context, name)

        def replay_ports(name: str, _backend: VSwitch) -> None:
            if self.cni_service is service:
                replay.replay(service.context, name)

        def prepare_allocated(slots: list[Slot]) -> None:
            # Only OVS gains from it: a VPP interface is made in about a millisecond.
            if self.cni_service is service and self.config.ovs.prepare_at_allocate:
                prepare_ports(service.context, [s for s in slots if s.vswitch == "ovs"])

        def remove_prepared_port(device_id: str) -> None:
            # A DRA claim unprepared before any pod claimed its port: the port goes too.
            if self.cni_service is service:
                try:
                    service.context.background.submit(remove_prepared, service.context,
                                                      device_id)
                except RuntimeError:  # the CNI service is stopping
                    pass

        self.allocator.on_allocated(prepare_allocated)
        self.allocator.on_released(remove_prepared_port)
        self.vswitch_monitor.on_recovered(replay_ports)
        # Runs now, on this thread, for the vSwitches already healthy; later for the others.
        self.vswitch_monitor.on_first_healthy(adopt_ports)

    def _stop_cni_service(self) -> None:
        service, self.cni_service = self.cni_service, None
        if service is not None:
            service.stop()

    # --- DRA front end (dra/): pools with frontend: dra ---

    def _device_plugin_pools(self) -> list[str]:
        served = set(self.config.pools_of("deviceplugin"))
        return [name for name in self.manager.pool_names() if name in served]

    def _maybe_start_dra(self) -> None:
        if self.dra is not None or not self.config.pools_of("dra"):
            return
        from dra.frontend import DraFrontend, DraSettings

        opts = self.options
        try:
            self.dra = DraFrontend(DraSettings(
                node=opts.node_name, kubelet_dir=opts.kubelet_dir, run_dir=opts.run_dir,
                cdi_dir=opts.dra_cdi_dir, kubeconfig=opts.kubeconfig),
                self.manager, self.allocator, on_registered=self.status_writer.mark_dirty)
            self.dra.start()
        except Exception as exc:  # no API server credentials: the device plugin pools go on
            log.error("DRA front end not started, retrying next round error=%s", exc)
            self.dra = None

    def _stop_dra(self) -> None:
        dra, self.dra = self.dra, None
        if dra is not None:
            dra.stop()

    # --- internals ---

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.options.refresh_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception:  # one bad round must not end the refresher
                log.exception("refresh round failed")

    def _stop_refresher(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._refresher is not None:
            self._refresher.join(timeout=10)
            self._refresher = None

    def _maybe_reload_config(self) -> None:
        stamp = _stamp(self.options.config_path)
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        try:
            config = load_config(self.options.config_path)
        except ConfigError as exc:
            log.error("config reload refused, keeping the running config error=%s", exc)
            return
        if config == self.config:
            return
        log.info("config reloaded path=%s pools=%s", self.options.config_path,
                 ",".join(p.name for p in config.pools))
        self.config = config
        self.vswitch_monitor.configure(config)

    def _resources_changed(self) -> bool:
        return any(self.manager.pool_resource(p.pool) not in (None, p.resource)
                   for p in self.plugins.status())

    def _on_registered(self, pool: str) -> None:
        self.status_writer.mark_dirty()

    def _check_socket_paths(self) -> None:
        longest = max((len(naming.slot_device_id(p.name, MAX_NUMA_ID, p.slots_per_node - 1))
                       for p in self.config.pools if p.is_socket_kind), default=0)
        if not longest:
            return
        length = len(str(self.options.run_dir / "s")) + 1 + longest + 1 + len(naming.SOCKET_NAME)
        if length > _MAX_SOCKET_PATH:
            log.warning("slot socket paths can reach %d bytes, over the kernel's %d: use a "
                        "shorter --run-dir (now %s)", length, _MAX_SOCKET_PATH,
                        self.options.run_dir)

    def _start_metrics(self) -> None:
        address = self.options.metrics_address
        if address is not None and address.lower() in ("off", "none", ""):
            return
        try:
            server = metrics.MetricsServer(
                address=metrics.resolve_address(address),
                health=lambda: not self._stop.is_set(),
                ready=self._ready,
            )
            metrics.watch_agent(self._metrics_view)
            self.metrics_server = server.start()
        except (OSError, ValueError) as exc:
            log.error("metrics endpoint not started error=%s", exc)

    def _stop_metrics(self) -> None:
        metrics.unwatch_agent(self._metrics_view)
        server, self.metrics_server = self.metrics_server, None
        if server is not None:
            server.stop()

    def _ready(self) -> tuple[bool, str]:
        waiting = [p.pool for p in self.plugins.status() if not p.registered]
        if self.config.pools_of("dra") and (self.dra is None or not self.dra.plugin.registered):
            waiting.append("DRA plugin")
        return not waiting, f"not registered with the kubelet yet: {', '.join(waiting)}"

    def _slot_rows(self) -> list[metrics.SlotRow]:
        return [(view.name, node, u.total, u.used)
                for view, usage in pool_usage(self.manager) for node, u in usage.items()]

    def _vswitch_rows(self) -> list[tuple[str, bool]]:
        return [(s.name, s.healthy) for s in self.vswitch_monitor.states().values()]

    def _start_hotplug(self) -> None:
        if not self.options.udev:
            return
        try:
            from numa.hotplug import HotplugMonitor

            def on_event(_event: Any) -> None:
                self.scanner.nics_changed()
                self.wake()

            monitor = HotplugMonitor(on_event)
            monitor.start()
            self._hotplug = monitor
            self.scanner.events = True
        except Exception as exc:  # no netlink in this container: the periodic rescan remains
            log.warning("udev hotplug events unavailable, rescanning periodically only "
                        "interval_s=%.1f error=%s", self.options.refresh_interval, exc)

    def _stop_hotplug(self) -> None:
        monitor, self._hotplug = self._hotplug, None
        self.scanner.events = False
        if monitor is not None:
            monitor.stop()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    # A ConfigMap update swaps a symlink: stat() follows it, so the inode changes too.
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


# --- command line -----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH,
                        help="configuration file (default %(default)s)")
    parser.add_argument("--kubelet-dir", type=Path, default=naming.DEFAULT_KUBELET_DIR,
                        help="kubelet root: device-plugins/ and pod-resources/ are in it "
                             "(default %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=naming.DEFAULT_RUN_DIR,
                        help="slot directories, CNI socket and state (default %(default)s)")
    parser.add_argument("--sysfs", type=Path, default=Path("/sys"),
                        help="sysfs root to read the topology from (default %(default)s)")
    hidden = argparse.SUPPRESS
    parser.add_argument("--devinfo-dir", type=Path, default=naming.DEVINFO_DIR, help=hidden)
    parser.add_argument("--cdi-dir", type=Path, default=None, help=hidden)
    parser.add_argument("--pod-resources-socket", type=Path, default=None, help=hidden)
    parser.add_argument("--metrics-address", default=None, help=hidden)
    parser.add_argument("--slot-group", default=None, help=hidden)
    parser.add_argument("--refresh-interval", type=float, default=1.0, help=hidden)
    parser.add_argument("--nic-rescan-interval", type=float, default=DEFAULT_NIC_INTERVAL,
                        help="seconds between NIC rescans when udev reports no change "
                             "(default %(default)s; with --no-udev NICs are read every round)")
    parser.add_argument("--reconcile-interval", type=float, default=300.0, help=hidden)
    parser.add_argument("--no-udev", action="store_true", help=hidden)
    parser.add_argument("--node-name", default=os.environ.get("NODE_NAME") or socket.gethostname(),
                        help="this node's name in the API, for the ResourceSlices of DRA pools "
                             "(default $NODE_NAME, else the host name)")
    parser.add_argument("--kubeconfig", type=Path, default=None,
                        help="kubeconfig for the API server (DRA pools); default: the pod's "
                             "service account")
    parser.add_argument("--dra-cdi-dir", type=Path, default=naming.CDI_DIR, help=hidden)
    parser.add_argument("--log-level", default=os.environ.get("NUMANET_LOG_LEVEL", "INFO"),
                        help=hidden)


def options_from_args(args: argparse.Namespace) -> AgentOptions:
    return AgentOptions(
        config_path=args.config, kubelet_dir=args.kubelet_dir, run_dir=args.run_dir,
        sysfs=args.sysfs, devinfo_dir=args.devinfo_dir, cdi_dir=args.cdi_dir,
        pod_resources_socket=args.pod_resources_socket, metrics_address=args.metrics_address,
        slot_group=_group_id(args.slot_group), refresh_interval=args.refresh_interval,
        nic_rescan_interval=args.nic_rescan_interval,
        reconcile_interval=args.reconcile_interval, udev=not args.no_udev,
        node_name=args.node_name, kubeconfig=args.kubeconfig, dra_cdi_dir=args.dra_cdi_dir,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("ovsdbapp").setLevel(logging.WARNING)
    try:
        options = options_from_args(args)
        agent = Agent(options)
    except (ConfigError, ValueError) as exc:
        print(f"numanet agent: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal received signal=%s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.start()
    except Exception as exc:
        log.exception("agent failed to start")
        agent.stop()
        print(f"numanet agent: cannot start: {exc}", file=sys.stderr)
        return 1
    stop.wait()
    agent.stop()
    return 0


def _group_id(value: str | None) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    import grp

    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise ValueError(f"--slot-group {value!r}: no such group; give a group name or a "
                         "numeric gid") from None
