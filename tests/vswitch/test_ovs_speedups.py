"""What keeps the OVS backend's Python cheap: the stdlib-backed JSON-RPC stream parser
(vswitch.ovs.fastjson) and the one-conversion column reader (connection.read_column).

The parser must split a stream into the same messages as python-ovs's own parser, however
the stream is cut into chunks, and reject what that parser rejects; the backend tests
exercise it against a real ovsdb-server, and the last test here reads a live database.
"""

from __future__ import annotations

import json

import ovs.json
import pytest

from vswitch.api import Owner, PortSpec
from vswitch.ovs import fastjson

MESSAGES = [
    {"id": 0, "method": "get_schema", "params": ["Open_vSwitch"]},
    {"id": None, "method": "update3", "params": ["mon", "0000", {"Interface": {
        "a49b": {"modify": {"ofport": 1, "error": ["set", []]}}}}]},
    {"id": 4, "result": [{"uuid": ["uuid", "e5da"]}, {"count": 1}], "error": None},
    # Strings that look like message boundaries or braces must not split a message.
    {"id": 5, "result": {"external_ids": ["map", [["k", "}{"], ["v", "} {\"x\": 1}"]]]}},
    {"id": 6, "result": {"name": "p\u00e9\u4e2d\U0001f600", "n": -1.5e3, "t": True, "f": False}},
]


def feed_stream(text: str, chunk: int) -> list[object]:
    """What ovs.jsonrpc.Connection.recv does: feed each chunk, start over after a message."""
    out: list[object] = []
    parser: fastjson.StreamParser | None = None
    pending = ""
    for start in range(0, len(text), chunk):
        pending += text[start:start + chunk]
        while pending:
            if parser is None:
                parser = fastjson.StreamParser()
            pending = pending[parser.feed(pending):]
            if parser.is_done():
                out.append(parser.finish())
                parser = None
            else:
                break
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 4096])
def test_concatenated_messages_come_out_whole_whatever_the_chunks(chunk):
    text = "".join(json.dumps(m, separators=(",", ":")) for m in MESSAGES)
    assert feed_stream(text, chunk) == MESSAGES


def test_whitespace_between_messages_is_skipped():
    text = "  \n".join(json.dumps(m) for m in MESSAGES) + "\n"
    assert feed_stream(text, 5) == MESSAGES


def test_an_incomplete_message_is_not_done():
    parser = fastjson.StreamParser()
    text = json.dumps(MESSAGES[1])
    assert parser.feed(text[:-1]) == len(text) - 1
    assert not parser.is_done()
    assert parser.feed(text[-1:]) == 1
    assert parser.is_done() and parser.finish() == MESSAGES[1]


@pytest.mark.parametrize("chunks, words", [
    (["[1, 2]"], "must be an object"),
    (["42 "], "must be an object"),
    # A complete message, then text that is no message, seen when the next "}" arrives.
    (['{"id": 1} x', ' {"id": 2}'], "unexpected text after"),
])
def test_what_is_not_a_json_rpc_stream_is_an_error_string(chunks, words):
    parser = fastjson.StreamParser()
    for chunk in chunks:
        parser.feed(chunk)
    assert parser.is_done()
    result = parser.finish()
    assert isinstance(result, str) and words in result


def test_install_swaps_only_the_streaming_parser():
    if ovs.json.PARSER != ovs.json.PARSER_PY:
        pytest.skip("python-ovs has its C parser here: nothing is swapped")
    assert fastjson.install() is True
    assert fastjson.install() is True  # idempotent
    assert isinstance(ovs.json.Parser(), fastjson.StreamParser)
    # Whole documents (schemas, from_string) keep python-ovs's own parser and its checks.
    assert ovs.json.from_string('{"a": [1, "b"]}') == {"a": [1, "b"]}
    assert isinstance(ovs.json.from_string('{"a": 1} trailing'), str)


@pytest.mark.ovs
def test_read_column_reads_what_python_ovs_reads(ovs_bench):
    """On a live database: every monitored column of every row, maps, sets and optional
    columns alike, reads the same through read_column as through python-ovs."""
    from vswitch.ovs.connection import COLUMNS, read_column

    device = "fastjson-n0-000"
    slot = ovs_bench.slots / device
    slot.mkdir()
    ovs_bench.switch.plug(PortSpec(device_id=device, kind="vhost-user", container_role="server",
                                   socket_path=str(slot / "sock"), network=ovs_bench.bridge,
                                   owner=Owner("ns", "pod", "c" * 64, "net1"), vlan=7))
    conn = ovs_bench.switch._connection()

    def compare(tables):
        checked = 0
        for table, columns in COLUMNS.items():
            for row in tables[table].rows.values():
                for column in columns:
                    assert read_column(row, column) == getattr(row, column), (table, column)
                    checked += 1
        return checked

    assert conn.read(compare) > 20
    assert ovs_bench.switch.ports()[0].device_id == device
