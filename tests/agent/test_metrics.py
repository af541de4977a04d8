"""The agent's metrics endpoint: numanet's names on prometheus_client's registry, parsed
back strictly; health and readiness; nothing else on the port."""

from __future__ import annotations

import http.client
import re
import socket
import uuid

import pytest
from helpers.metrics import sample
from prometheus_client import CollectorRegistry, Counter, generate_latest

from agent import metrics
from cni.metrics import observe_cni_call, observe_prepared_port
from deviceplugin.metrics import kubelet_call

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


def test_the_fixed_names_reach_the_default_registry():
    """The names and labels the README documents, fed by the code that records them."""
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    with kubelet_call(pool, "Allocate"):
        pass
    with kubelet_call(pool, "Allocate") as call:
        call.code = "INVALID_ARGUMENT"
    with pytest.raises(RuntimeError), kubelet_call(pool, "GetPreferredAllocation"):
        raise RuntimeError("boom")
    before = sample("numanet_cni_calls_total", command="ADD", code="0")
    observe_cni_call("ADD", 0, 0.02)
    observe_prepared_port(pool, "claimed")
    rows = [(pool, 0, 32, 3), (pool, None, 1, 0)]
    view = metrics.AgentView(lambda: rows, lambda: [("ovs", False)])
    metrics.watch_agent(view)
    try:
        types, samples = parse_exposition(generate_latest().decode())
        assert find(samples, "numanet_kubelet_calls_total", pool=pool, method="Allocate",
                    code="OK") == 1
        assert find(samples, "numanet_kubelet_calls_total", pool=pool, method="Allocate",
                    code="INVALID_ARGUMENT") == 1
        assert find(samples, "numanet_kubelet_calls_total", pool=pool,
                    method="GetPreferredAllocation", code="UNKNOWN") == 1
        assert find(samples, "numanet_kubelet_call_duration_seconds_count", pool=pool,
                    method="Allocate") == 2
        assert find(samples, "numanet_cni_calls_total", command="ADD", code="0") == before + 1
        assert find(samples, "numanet_prepared_ports_total", pool=pool, outcome="claimed") == 1
        assert find(samples, "numanet_vswitch_up", vswitch="ovs") == 0
        assert find(samples, "numanet_slots_total", pool=pool, numa_node="0") == 32
        assert find(samples, "numanet_slots_used", pool=pool, numa_node="0") == 3
        assert find(samples, "numanet_slots_used", pool=pool, numa_node="-1") == 0
        assert types["numanet_kubelet_calls_total"] == "counter"
        assert types["numanet_cni_call_duration_seconds"] == "histogram"
        assert types["numanet_slots_total"] == "gauge"
        assert not [name for name in types if name.endswith("_created")]
        # The agent's view is read at each scrape: a pool that went away leaves no series.
        rows[:] = [("other", 1, 4, 4)]
        _, samples = parse_exposition(generate_latest().decode())
        assert not [x for x in samples
                    if x[1].get("pool") == pool and x[0].startswith("numanet_slots")]
        assert find(samples, "numanet_slots_used", pool="other", numa_node="1") == 4
    finally:
        metrics.unwatch_agent(view)
    _, samples = parse_exposition(generate_latest().decode())
    assert not [x for x in samples if x[0].startswith("numanet_slots")]


def test_a_failing_agent_view_does_not_break_the_scrape():
    def broken() -> list:
        raise RuntimeError("view bug")

    bad = metrics.AgentView(broken, lambda: [])
    good = metrics.AgentView(lambda: [("p", 0, 2, 1)], lambda: [("vpp", True)])
    metrics.watch_agent(bad)
    metrics.watch_agent(good)
    try:
        _, samples = parse_exposition(generate_latest().decode())
    finally:
        metrics.unwatch_agent(bad)
        metrics.unwatch_agent(good)
    assert find(samples, "numanet_slots_total", pool="p", numa_node="0") == 2
    assert find(samples, "numanet_vswitch_up", vswitch="vpp") == 1


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()
    finally:
        conn.close()


def test_http_endpoint_serves_health_ready_and_metrics_and_nothing_else():
    reg = CollectorRegistry()
    Counter("t_hits", "x", registry=reg).inc()
    state = {"ready": False}
    server = metrics.MetricsServer(
        ("127.0.0.1", 0), health=lambda: True,
        ready=lambda: (state["ready"], "kubelet registration pending"), registry=reg)
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
        # The agent's status (paths, failure reasons) is not served to the network.
        code, _, body = _get(port, "/status")
        assert code == 404 and "/metrics" in body
        code, _, body = _get(port, "/nope")
        assert code == 404
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
