"""The agent's health and metrics endpoint: Prometheus text exposition, no dependency.

One module-level registry (``REGISTRY``) holds numanet's metrics; the device plugin and
the CNI service record into it through cheap helpers, and ``MetricsServer`` serves it
with the health, readiness and status callables the agent passes in.

Wiring (for ``deviceplugin/agent.py``)::

    from deviceplugin import metrics

    server = metrics.MetricsServer(
        address=metrics.resolve_address(None),    # $NUMANET_METRICS_ADDRESS or 0.0.0.0:9470
        health=lambda: True,                      # alive: the main loop still turns
        ready=lambda: (registered, "plugins not registered with the kubelet yet"),
        status=agent_status_dict,                 # JSON-able dict, also used by `numanet status`
    )
    server.start()                                # daemon thread; server.stop() on SIGTERM

    # at each scrape, refresh the slot gauges from the pools (replaces every series):
    metrics.REGISTRY.add_collector(
        lambda: metrics.set_slots([(pool, node, total, used), ...]))

    # where things happen:
    with metrics.kubelet_call(pool, "Allocate") as call:   # times it, counts it
        ...                                                # call.code = "INVALID_ARGUMENT"
    metrics.observe_cni_call("ADD", "0", seconds)          # CNI code as a string, "0" = ok
    metrics.set_vswitch_up("ovs", True)

Health callables return ``bool`` or ``(bool, reason)``; one that raises counts as
unhealthy and its message is the reason. ``/status`` serves ``status()`` as JSON.

Metrics (names are fixed; the README documents them):

=========================================== ========= ==========================
name                                        type      labels
=========================================== ========= ==========================
numanet_slots_total                         gauge     pool, numa_node
numanet_slots_used                          gauge     pool, numa_node
numanet_kubelet_calls_total                 counter   pool, method, code
numanet_kubelet_call_duration_seconds       histogram pool, method
numanet_cni_calls_total                     counter   command, code
numanet_cni_call_duration_seconds           histogram command
numanet_vswitch_up                          gauge     vswitch
=========================================== ========= ==========================
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

log = logging.getLogger(__name__)

ADDRESS_ENV = "NUMANET_METRICS_ADDRESS"
DEFAULT_ADDRESS = ("0.0.0.0", 9470)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Kubelet calls are sub-millisecond to seconds; CNI calls include a vSwitch transaction.
KUBELET_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CNI_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

HealthResult = bool | tuple[bool, str]


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r} is not a valid Prometheus name")
        for label in labelnames:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"label name {label!r} of metric {name} is not allowed")
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(
                f"metric {self.name} takes labels {list(self.labelnames)}, got {sorted(labels)}"
            )
        return tuple(str(labels[n]) for n in self.labelnames)

    def _samples(self) -> Iterator[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def render(self) -> str:
        head = f"# HELP {self.name} {_escape_help(self.help)}\n# TYPE {self.name} {self.kind}\n"
        return head + "".join(line + "\n" for line in self._samples())


class _ValueMetric(_Metric):
    """One number per label set: what counters and gauges share."""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def value(self, **labels: object) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def _samples(self) -> Iterator[str]:
        with self._lock:
            items = sorted(self._values.items())
        for key, value in items:
            yield f"{self.name}{_label_text(self.labelnames, key)} {_format_value(value)}"


class Counter(_ValueMetric):
    """Only goes up; one value per label set."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name} cannot go down (inc by {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_ValueMetric):
    """Any value; ``replace`` swaps every series at once so removed pools vanish."""

    kind = "gauge"

    def set(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def replace(self, series: Iterable[tuple[dict[str, object], float]]) -> None:
        fresh = {self._key(labels): float(value) for labels, value in series}
        with self._lock:
            self._values = fresh


@dataclass
class _HistogramSeries:
    counts: list[int]  # per bucket, not cumulative; the last one is +Inf
    total: float = 0.0
    count: int = 0


class Histogram(_Metric):
    """Bucketed observations; rendered cumulative with ``le``, plus ``_sum`` and ``_count``."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = KUBELET_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"histogram {name} needs distinct finite bucket bounds")
        self.buckets = tuple(bounds)
        self._series: dict[tuple[str, ...], _HistogramSeries] = {}

    def observe(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        # bisect_left: a value equal to a bound belongs to that bucket (le means <=).
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _HistogramSeries([0] * (len(self.buckets) + 1))
            series.counts[index] += 1
            series.total += value
            series.count += 1

    def _samples(self) -> Iterator[str]:
        with self._lock:
            snapshot = sorted(
                (key, list(s.counts), s.total, s.count) for key, s in self._series.items()
            )
        bounds = [_format_value(b) for b in self.buckets] + ["+Inf"]
        for key, counts, total, count in snapshot:
            running = 0
            for bound, n in zip(bounds, counts, strict=True):
                running += n
                labels = _label_text(self.labelnames, key, f'le="{bound}"')
                yield f"{self.name}_bucket{labels} {running}"
            plain = _label_text(self.labelnames, key)
            yield f"{self.name}_sum{plain} {_format_value(total)}"
            yield f"{self.name}_count{plain} {count}"


_M = TypeVar("_M", bound=_Metric)


class Registry:
    """Named metrics plus collectors run just before each render (to refresh gauges)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Callable[[], None]] = []

    def _register(self, metric: _M) -> _M:
        with self._lock:
            existing = self._metrics.get(metric.name)
            if existing is not None:
                if type(existing) is not type(metric) or existing.labelnames != metric.labelnames:
                    raise ValueError(f"metric {metric.name} is already registered differently")
                return existing  # type: ignore[return-value]  # same type, checked above
            self._metrics[metric.name] = metric
            return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._register(Counter(name, help_text, labelnames))

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._register(Gauge(name, help_text, labelnames))

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = KUBELET_BUCKETS,
    ) -> Histogram:
        return self._register(Histogram(name, help_text, labelnames, buckets))

    def add_collector(self, collector: Callable[[], None]) -> None:
        with self._lock:
            self._collectors.append(collector)

    def remove_collector(self, collector: Callable[[], None]) -> None:
        with self._lock:
            if collector in self._collectors:
                self._collectors.remove(collector)

    def render(self) -> str:
        with self._lock:
            collectors = list(self._collectors)
            metrics = sorted(self._metrics.values(), key=lambda m: m.name)
        for collect in collectors:
            try:
                collect()
            except Exception:  # a broken collector must not take /metrics down
                log.exception("metrics collector failed collector=%r", collect)
        return "".join(m.render() for m in metrics)


REGISTRY = Registry()

SLOTS_TOTAL = REGISTRY.gauge(
    "numanet_slots_total", "Slots advertised to the kubelet.", ("pool", "numa_node"))
SLOTS_USED = REGISTRY.gauge(
    "numanet_slots_used", "Slots allocated to pods.", ("pool", "numa_node"))
KUBELET_CALLS = REGISTRY.counter(
    "numanet_kubelet_calls_total", "Device plugin API calls from the kubelet.",
    ("pool", "method", "code"))
KUBELET_DURATION = REGISTRY.histogram(
    "numanet_kubelet_call_duration_seconds", "Time to answer a kubelet device plugin call.",
    ("pool", "method"), KUBELET_BUCKETS)
CNI_CALLS = REGISTRY.counter(
    "numanet_cni_calls_total", "CNI calls served; code 0 is success, else the CNI error code.",
    ("command", "code"))
CNI_DURATION = REGISTRY.histogram(
    "numanet_cni_call_duration_seconds", "Time to serve a CNI call in the agent.",
    ("command",), CNI_BUCKETS)
PREPARED_PORTS = REGISTRY.counter(
    "numanet_prepared_ports_total",
    "Ports prepared at Allocate, by outcome: prepared; failed (the ADD makes the port); "
    "claimed by the pod's ADD; removed, no pod having come for it.", ("pool", "outcome"))
VSWITCH_UP = REGISTRY.gauge(
    "numanet_vswitch_up", "1 when the agent's connection to the vSwitch is healthy.",
    ("vswitch",))


def observe_kubelet_call(pool: str, method: str, code: str, seconds: float) -> None:
    KUBELET_CALLS.inc(pool=pool, method=method, code=code)
    KUBELET_DURATION.observe(seconds, pool=pool, method=method)


def observe_cni_call(command: str, code: str | int, seconds: float) -> None:
    CNI_CALLS.inc(command=command, code=str(code))
    CNI_DURATION.observe(seconds, command=command)


def observe_prepared_port(pool: str, outcome: str) -> None:
    PREPARED_PORTS.inc(pool=pool, outcome=outcome)


def set_vswitch_up(vswitch: str, up: bool) -> None:
    VSWITCH_UP.set(1.0 if up else 0.0, vswitch=vswitch)


def set_slots(rows: Iterable[tuple[str, int | None, int, int]]) -> None:
    """Replace every slot series with ``(pool, numa_node, total, used)`` rows.

    A NUMA node of None (a NIC whose node is unknown) is exported as ``numa_node="-1"``,
    as sysfs says it.
    """
    totals: list[tuple[dict[str, object], float]] = []
    used: list[tuple[dict[str, object], float]] = []
    for pool, node, total, in_use in rows:
        labels: dict[str, object] = {"pool": pool, "numa_node": -1 if node is None else node}
        totals.append((labels, total))
        used.append((labels, in_use))
    SLOTS_TOTAL.replace(totals)
    SLOTS_USED.replace(used)


class _CallTimer:
    def __init__(self) -> None:
        self.code = "OK"


@contextmanager
def kubelet_call(pool: str, method: str) -> Iterator[_CallTimer]:
    """Time and count one kubelet call; an escaping exception counts as code UNKNOWN
    unless the body already set ``call.code`` (gRPC status names: OK, INVALID_ARGUMENT...)."""
    call = _CallTimer()
    start = time.perf_counter()
    try:
        yield call
    except BaseException:
        if call.code == "OK":
            call.code = "UNKNOWN"
        raise
    finally:
        observe_kubelet_call(pool, method, call.code, time.perf_counter() - start)


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
            self._reply(200, owner.registry.render(), CONTENT_TYPE, body)
        elif path in ("/healthz", "/readyz"):
            ok, reason = _call_health(owner.health if path == "/healthz" else owner.ready)
            self._reply(200 if ok else 503, reason + "\n", "text/plain; charset=utf-8", body)
        elif path == "/status":
            try:
                text = json.dumps(owner.status(), indent=2, sort_keys=True, default=str)
                code = 200
            except Exception as exc:
                text, code = json.dumps({"error": f"status failed: {exc}"}), 500
            self._reply(code, text + "\n", "application/json", body)
        else:
            self._reply(404, "not found: try /healthz, /readyz, /metrics or /status\n",
                        "text/plain; charset=utf-8", body)

    def _reply(self, code: int, text: str, content_type: str, body: bool) -> None:
        data = text.encode()
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
    """``/healthz``, ``/readyz``, ``/metrics`` and ``/status`` on one port, in a thread."""

    def __init__(
        self,
        address: tuple[str, int] = DEFAULT_ADDRESS,
        health: Callable[[], HealthResult] = lambda: True,
        ready: Callable[[], HealthResult] = lambda: True,
        status: Callable[[], dict[str, Any]] = dict,
        registry: Registry = REGISTRY,
    ) -> None:
        self.address = address
        self.health = health
        self.ready = ready
        self.status = status
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
            raise OSError(
                exc.errno,
                f"cannot listen for metrics on {host}:{port}: {exc.strerror}; "
                f"set {ADDRESS_ENV} to a free host:port",
            ) from exc
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
