"""The agent's health and metrics endpoint: ``/metrics``, ``/healthz``, ``/readyz`` on one
port (9470 by default), for Prometheus and the kubelet's probes.

The metrics are prometheus_client's default registry: the kubelet's calls
(``deviceplugin.metrics``), the CNI calls and prepared ports (``cni.metrics``), and, read
from the running agent at each scrape, the slots per pool and NUMA node and vSwitch health
(``numanet_slots_total``, ``numanet_slots_used``, ``numanet_vswitch_up``). The port serves
nothing else: the agent's status (config path, socket paths, failure reasons) stays on the
node, in the root-only ``<run-dir>/status.json`` that ``numanet status`` reads.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger(__name__)

ADDRESS_ENV = "NUMANET_METRICS_ADDRESS"
DEFAULT_ADDRESS = ("0.0.0.0", 9470)
CONTENT_TYPE = CONTENT_TYPE_LATEST

HealthResult = bool | tuple[bool, str]
SlotRow = tuple[str, int | None, int, int]  # pool, NUMA node (None: unknown), total, used


@dataclass
class AgentView:
    """What one running agent reports at a scrape."""

    slots: Callable[[], Iterable[SlotRow]]
    vswitches: Callable[[], Iterable[tuple[str, bool]]]  # name, healthy


@dataclass(eq=False)  # the registry keys its collectors by identity
class _AgentCollector(Collector):
    """Slot and vSwitch gauges read from the agents of this process at each scrape, so a
    pool that went away leaves no series behind."""

    views: list[AgentView] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        total = GaugeMetricFamily("numanet_slots_total", "Slots advertised to the kubelet.",
                                  labels=("pool", "numa_node"))
        used = GaugeMetricFamily("numanet_slots_used", "Slots allocated to pods.",
                                 labels=("pool", "numa_node"))
        up = GaugeMetricFamily("numanet_vswitch_up",
                               "1 when the agent's connection to the vSwitch is healthy.",
                               labels=("vswitch",))
        with self.lock:
            views = list(self.views)
        for view in views:
            try:
                for pool, node, count, in_use in view.slots():
                    # A NIC whose node is unknown: -1, as sysfs says it.
                    labels = [pool, str(-1 if node is None else node)]
                    total.add_metric(labels, count)
                    used.add_metric(labels, in_use)
                for name, healthy in view.vswitches():
                    up.add_metric([name], 1.0 if healthy else 0.0)
            except Exception:  # a broken view must not take /metrics down
                log.exception("agent metrics not collected")
        yield from (total, used, up)


# A ``_created`` series per counter and histogram doubles what Prometheus stores and says
# nothing the process start time does not.
disable_created_metrics()
_AGENTS = _AgentCollector()
REGISTRY.register(_AGENTS)


def watch_agent(view: AgentView) -> None:
    with _AGENTS.lock:
        _AGENTS.views.append(view)


def unwatch_agent(view: AgentView) -> None:
    with _AGENTS.lock:
        if view in _AGENTS.views:
            _AGENTS.views.remove(view)


def resolve_address(value: str | None) -> tuple[str, int]:
    """``host:port`` (or ``:port``, ``[v6]:port``) from the argument, else from
    ``$NUMANET_METRICS_ADDRESS``, else 0.0.0.0:9470. Raises ValueError naming the input."""
    text = value if value is not None else os.environ.get(ADDRESS_ENV)
    if not text:
        return DEFAULT_ADDRESS
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(
            f"metrics address {text!r} is not host:port (for example 0.0.0.0:9470 or :9470)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


def _call_health(check: Callable[[], HealthResult]) -> tuple[bool, str]:
    try:
        result = check()
    except Exception as exc:  # the reason is worth more than a 500 with a traceback
        return False, f"check failed: {exc}"
    if isinstance(result, tuple):
        ok, reason = result
        return bool(ok), reason if not ok else "ok"
    return bool(result), "ok" if result else "not ok"


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsHTTPServer
    timeout = 10  # a stalled client must not hold a thread forever
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(owner.registry), CONTENT_TYPE, body)
        elif path in ("/healthz", "/readyz"):
            ok, reason = _call_health(owner.health if path == "/healthz" else owner.ready)
            self._reply(200 if ok else 503, (reason + "\n").encode(),
                        "text/plain; charset=utf-8", body)
        else:
            self._reply(404, b"not found: try /healthz, /readyz or /metrics\n",
                        "text/plain; charset=utf-8", body)

    def _reply(self, code: int, data: bytes, content_type: str, body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("metrics http client=%s %s", self.client_address[0], format % args)


class _MetricsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: MetricsServer) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class MetricsServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on one port, in a thread."""

    def __init__(self, address: tuple[str, int] = DEFAULT_ADDRESS,
                 health: Callable[[], HealthResult] = lambda: True,
                 ready: Callable[[], HealthResult] = lambda: True,
                 registry: CollectorRegistry = REGISTRY) -> None:
        self.address = address
        self.health = health
        self.ready = ready
        self.registry = registry
        self._httpd: _MetricsHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("metrics server is not started")
        return int(self._httpd.server_address[1])

    def start(self) -> MetricsServer:
        try:
            self._httpd = _MetricsHTTPServer(self.address, self)
        except OSError as exc:
            host, port = self.address
            raise OSError(exc.errno, f"cannot listen for metrics on {host}:{port}: "
                          f"{exc.strerror}; set {ADDRESS_ENV} to a free host:port") from exc
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name="numanet-metrics", daemon=True)
        self._thread.start()
        log.info("metrics endpoint listening address=%s:%d", self.address[0], self.port)
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
