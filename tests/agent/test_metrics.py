"""The metrics registry and endpoint: exposition parsed back, cumulative buckets, threads, HTTP."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import uuid

import pytest

from deviceplugin import metrics

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), value)


def parse_exposition(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """A strict reader of the text format 0.0.4: TYPE per family, one sample per line."""
    assert text.endswith("\n"), "exposition must end with a newline"
    types: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"TYPE given twice for {name}"
            types[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels: dict[str, str] = {}
        rest = match["labels"] or ""
        while rest:
            lm = _LABEL.match(rest)
            assert lm, f"bad labels in {line!r}"
            labels[lm[1]] = _unescape(lm[2])
            rest = rest[lm.end():]
        samples.append((match["name"], labels, float(match["value"])))
    for name, _, _ in samples:
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"sample {name} has no TYPE line"
    return types, samples


def find(samples, name: str, **labels: str) -> float:
    hits = [v for n, lab, v in samples
            if n == name and all(lab.get(k) == w for k, w in labels.items())]
    assert len(hits) == 1, f"{name}{labels}: {len(hits)} samples"
    return hits[0]


def test_exposition_round_trips_escaped_labels_and_values():
    reg = metrics.Registry()
    c = reg.counter("t_requests_total", "Requests.\nSecond line \\ too.", ("path", "code"))
    g = reg.gauge("t_temperature", "Temp.", ("room",))
    c.inc(path='a"b\\c\nd', code="200")
    c.inc(2.5, path='a"b\\c\nd', code="200")
    g.set(-3.25, room="lab")
    g.set(float("inf"), room="sun")
    types, samples = parse_exposition(reg.render())
    assert types == {"t_requests_total": "counter", "t_temperature": "gauge"}
    assert find(samples, "t_requests_total", path='a"b\\c\nd', code="200") == 3.5
    assert find(samples, "t_temperature", room="lab") == -3.25
    assert find(samples, "t_temperature", room="sun") == float("inf")
    assert "# HELP t_requests_total Requests.\\nSecond line \\\\ too.\n" in reg.render()


def test_histogram_buckets_are_cumulative_and_le_is_inclusive():
    reg = metrics.Registry()
    h = reg.histogram("t_latency_seconds", "Latency.", ("op",), buckets=(0.1, 1.0, 0.5))
    for v in (0.05, 0.1, 0.3, 0.5, 0.7, 2.0, 9.0):
        h.observe(v, op="x")
    types, samples = parse_exposition(reg.render())
    assert types["t_latency_seconds"] == "histogram"
    buckets = [(lab["le"], v) for n, lab, v in samples if n == "t_latency_seconds_bucket"]
    assert buckets == [("0.1", 2), ("0.5", 4), ("1", 5), ("+Inf", 7)]
    assert find(samples, "t_latency_seconds_count", op="x") == 7
    assert find(samples, "t_latency_seconds_sum", op="x") == pytest.approx(12.65)


def test_wrong_labels_and_bad_names_are_refused_with_the_reason():
    reg = metrics.Registry()
    c = reg.counter("t_total", "x", ("pool",))
    with pytest.raises(ValueError, match=r"takes labels \['pool'\]"):
        c.inc(pool="a", extra="b")
    with pytest.raises(ValueError, match="cannot go down"):
        c.inc(-1, pool="a")
    with pytest.raises(ValueError, match="not a valid Prometheus name"):
        reg.gauge("bad-name", "x")
    with pytest.raises(ValueError, match="not a valid Prometheus name"):
        reg.gauge("t_line\n", "x")
    with pytest.raises(ValueError, match="already registered differently"):
        reg.gauge("t_total", "x", ("pool",))
    assert reg.counter("t_total", "x", ("pool",)) is c  # same shape: the same metric back


def test_concurrent_updates_lose_nothing_and_every_scrape_is_consistent():
    reg = metrics.Registry()
    c = reg.counter("t_calls_total", "x", ("worker",))
    h = reg.histogram("t_call_seconds", "x", (), buckets=(0.001, 0.01, 0.1))
    threads_n, per_thread = 8, 3000
    stop = threading.Event()
    problems: list[str] = []

    def work(i: int) -> None:
        for j in range(per_thread):
            c.inc(worker=str(i % 2))
            h.observe((j % 4) * 0.004)

    def scrape() -> None:
        while not stop.is_set():
            _, samples = parse_exposition(reg.render())
            counts = [v for n, _, v in samples if n == "t_call_seconds_bucket"]
            if counts != sorted(counts):
                problems.append(f"buckets not cumulative: {counts}")
            total = [v for n, _, v in samples if n == "t_call_seconds_count"]
            if counts and total and counts[-1] != total[0]:
                problems.append(f"+Inf bucket {counts[-1]} != count {total[0]}")

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    scraper.join()
    assert problems == []
    _, samples = parse_exposition(reg.render())
    assert find(samples, "t_calls_total", worker="0") + find(samples, "t_calls_total", worker="1") \
        == threads_n * per_thread
    assert find(samples, "t_call_seconds_count") == threads_n * per_thread
    # j % 4 -> 0, 0.004, 0.008, 0.012: three quarters are <= 0.01
    assert find(samples, "t_call_seconds_bucket", le="0.01") == threads_n * per_thread * 3 // 4


def test_module_helpers_feed_the_default_registry_with_the_fixed_names():
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    metrics.observe_kubelet_call(pool, "Allocate", "OK", 0.002)
    with metrics.kubelet_call(pool, "Allocate") as call:
        call.code = "INVALID_ARGUMENT"
    with pytest.raises(RuntimeError), metrics.kubelet_call(pool, "GetPreferredAllocation"):
        raise RuntimeError("boom")
    metrics.observe_cni_call("ADD", 0, 0.02)
    metrics.set_vswitch_up("ovs", False)
    metrics.set_slots([(pool, 0, 32, 3), (pool, None, 1, 0)])
    _, samples = parse_exposition(metrics.REGISTRY.render())
    assert find(samples, "numanet_kubelet_calls_total", pool=pool, method="Allocate",
                code="OK") == 1
    assert find(samples, "numanet_kubelet_calls_total", pool=pool, method="Allocate",
                code="INVALID_ARGUMENT") == 1
    assert find(samples, "numanet_kubelet_calls_total", pool=pool,
                method="GetPreferredAllocation", code="UNKNOWN") == 1
    assert find(samples, "numanet_kubelet_call_duration_seconds_count", pool=pool,
                method="Allocate") == 2
    assert find(samples, "numanet_cni_calls_total", command="ADD", code="0") >= 1
    assert find(samples, "numanet_vswitch_up", vswitch="ovs") == 0
    assert find(samples, "numanet_slots_total", pool=pool, numa_node="0") == 32
    assert find(samples, "numanet_slots_used", pool=pool, numa_node="-1") == 0
    # A new snapshot replaces the old one: the pool that went away leaves no series behind.
    metrics.set_slots([("other", 1, 4, 4)])
    _, samples = parse_exposition(metrics.REGISTRY.render())
    assert not [s for s in samples if s[1].get("pool") == pool and s[0].startswith("numanet_slots")]
    assert find(samples, "numanet_slots_used", pool="other", numa_node="1") == 4


def test_a_failing_collector_does_not_break_the_scrape():
    reg = metrics.Registry()
    g = reg.gauge("t_g", "x")

    def bad() -> None:
        raise RuntimeError("collector bug")

    reg.add_collector(bad)
    reg.add_collector(lambda: g.set(7))
    _, samples = parse_exposition(reg.render())
    assert find(samples, "t_g") == 7


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()
    finally:
        conn.close()


def test_http_endpoint_serves_health_ready_metrics_and_status():
    reg = metrics.Registry()
    reg.counter("t_hits_total", "x").inc()
    state = {"ready": False}

    def status() -> dict:
        if state.get("broken"):
            raise RuntimeError("pools not loaded")
        return {"pools": [{"name": "vhostuser-ovs", "free": 31}]}

    server = metrics.MetricsServer(
        ("127.0.0.1", 0), health=lambda: True,
        ready=lambda: (state["ready"], "kubelet registration pending"),
        status=status, registry=reg)
    with server:
        port = server.port
        assert _get(port, "/healthz")[:1] == (200,)
        code, _, body = _get(port, "/readyz")
        assert (code, body) == (503, "kubelet registration pending\n")
        state["ready"] = True
        assert _get(port, "/readyz")[0] == 200
        code, ctype, body = _get(port, "/metrics")
        assert code == 200 and ctype == metrics.CONTENT_TYPE
        _, samples = parse_exposition(body)
        assert find(samples, "t_hits_total") == 1
        code, ctype, body = _get(port, "/status")
        assert code == 200 and ctype == "application/json"
        assert json.loads(body)["pools"][0]["free"] == 31
        state["broken"] = True
        code, _, body = _get(port, "/status")
        assert code == 500 and "pools not loaded" in json.loads(body)["error"]
        code, _, body = _get(port, "/nope")
        assert code == 404 and "/metrics" in body
        code, _, body = _get(port, "/healthz", "HEAD")
        assert (code, body) == (200, "")
    # stopped: the port is closed
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_health_check_that_raises_is_unhealthy_with_its_message():
    def broken() -> bool:
        raise RuntimeError("main loop stalled for 30s")

    with metrics.MetricsServer(("127.0.0.1", 0), health=broken) as server:
        code, _, body = _get(server.port, "/healthz")
    assert code == 503 and "main loop stalled for 30s" in body


def test_port_in_use_is_reported_with_what_to_do():
    with metrics.MetricsServer(("127.0.0.1", 0)) as first:
        with pytest.raises(OSError, match=metrics.ADDRESS_ENV):
            metrics.MetricsServer(("127.0.0.1", first.port)).start()


def test_resolve_address(monkeypatch):
    monkeypatch.delenv(metrics.ADDRESS_ENV, raising=False)
    assert metrics.resolve_address(None) == metrics.DEFAULT_ADDRESS
    assert metrics.resolve_address(":9100") == ("0.0.0.0", 9100)
    assert metrics.resolve_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert metrics.resolve_address("[::1]:9470") == ("::1", 9470)
    monkeypatch.setenv(metrics.ADDRESS_ENV, "10.0.0.1:1234")
    assert metrics.resolve_address(None) == ("10.0.0.1", 1234)
    for bad in ("9470", "host:port", "h:70000"):
        with pytest.raises(ValueError, match="not host:port"):
            metrics.resolve_address(bad)
