"""The CNI service counts and times every call it serves (``numanet_cni_calls_total``,
``numanet_cni_call_duration_seconds``), as a Prometheus scrape of the agent shows them.

The calls go through the real shim to the service the agent starts; the scrape is an
HTTP GET of the agent's metrics endpoint. The registry is the process's own, shared with
other tests, so every assertion is about the change a call made.
"""

from __future__ import annotations

import http.client
import re

from helpers.metrics import sample
from prometheus_client import generate_latest

from agent import metrics

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` of a running MetricsServer as {(name, labels): value}."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        text = response.read().decode()
    finally:
        conn.close()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not an exposition line: {line!r}"
        labels = frozenset(_LABEL.findall(match[2] or ""))
        samples[(match[1], labels)] = float(match[3])
    return samples


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_add_and_failing_add_are_counted_by_command_and_code(cni_bed, pod_netns):
    good = cni_bed.slots.device_id("vhostuser-ovs", 5)
    others = cni_bed.slots.device_id("vhostuser-ovs", 6)
    cni_bed.allocate("default", "pod-a", good)
    cni_bed.allocate("default", "pod-b", others)
    with metrics.MetricsServer(("127.0.0.1", 0)) as server:
        before = _scrape(server.port)

        ok = cni_bed.cni("ADD", cni_bed.netconf(good), "m1", netns_path=pod_netns.path)
        refused = cni_bed.cni("ADD", cni_bed.netconf(others), "m2", netns_path=pod_netns.path)
        garbage = cni_bed.cni("ADD", b"{not json", "m3", netns_path=pod_netns.path)

        after = _scrape(server.port)
    assert ok.rc == 0, ok.stdout
    assert refused.rc == 1 and '"code": 100' in refused.stdout, refused.stdout
    assert garbage.rc == 1 and '"code": 6' in garbage.stdout, garbage.stdout

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    calls = "numanet_cni_calls_total"
    assert delta(calls, command="ADD", code="0") == 1
    assert delta(calls, command="ADD", code="100") == 1  # pod-b's device, asked by pod-a
    assert delta(calls, command="ADD", code="6") == 1  # stdin is not JSON
    # Every call was timed, under its command.
    duration = "numanet_cni_call_duration_seconds"
    assert delta(f"{duration}_count", command="ADD") == 3
    assert delta(f"{duration}_sum", command="ADD") > 0
    assert delta(f"{duration}_bucket", command="ADD", le="+Inf") == 3

    assert cni_bed.cni("DEL", cni_bed.netconf(good), "m1").rc == 0
    cni_bed.assert_clean()


def test_an_unknown_command_is_counted_under_one_label(cni_bed):
    before = sample("numanet_cni_calls_total", command="invalid", code="4")
    for word in ("FROB", "ADDX"):
        call = cni_bed.cni(word, cni_bed.netconf())
        assert call.rc == 1
    # Made-up commands do not each get a series of their own.
    assert sample("numanet_cni_calls_total", command="invalid", code="4") == before + 2
    assert "FROB" not in generate_latest().decode()
