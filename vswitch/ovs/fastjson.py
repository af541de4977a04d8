"""JSON-RPC message parsing for python-ovs through the standard library's C decoder.

python-ovs parses every message from ovsdb-server with ``ovs.json.Parser``. Its fast path
is a C extension (``ovs._json``) that the PyPI wheel only has when libopenvswitch was
there at build time; otherwise it falls back to a pure-Python parser that handles one
character per call, about 0.6 us per byte, holding the GIL in the connection thread.
Every plug then pays about a millisecond just to read the echo of its own transaction
and vswitchd's answer. ``install`` swaps in ``StreamParser``, which buffers the stream
and decodes a message with ``json.JSONDecoder.raw_decode`` once it can be complete.

Only the streaming use (``ovs.jsonrpc``, which creates ``Parser()`` per message) is
replaced; whole documents (``Parser(check_trailer=True)``: schema files, ``from_string``)
keep python-ovs's own parser. Nothing changes when the C extension is present.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import ovs.json

_BOUNDARY = re.compile(r"\}\s*\{")
_installed = False
_install_lock = threading.Lock()


class StreamParser:
    """The ``feed``/``is_done``/``finish`` interface of ``ovs.json.Parser`` for one
    JSON-RPC message (a JSON object) at the head of a stream of concatenated messages.

    ``feed(text)`` returns how many characters of ``text`` it used: all of them while the
    message is incomplete, up to the message's end once it is complete (the rest belongs
    to the next message). A decode is only tried when the text just fed can end an object
    (a ``}`` at its end, or ``}`` followed by the ``{`` of the next message), so a large
    message arriving in many chunks is not decoded over and over.
    """

    _decoder = json.JSONDecoder()

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._size = 0
        self._done = False
        self._value: Any = None
        self._error: str | None = None

    def feed(self, text: str) -> int:
        if self._done:
            return 0
        before = self._size
        self._chunks.append(text)
        self._size += len(text)
        if not (text.rstrip().endswith("}") or ("{" in text and _BOUNDARY.search(text))):
            head = text.lstrip()
            if before == 0 and head and head[0] != "{":
                self._fail(f"a JSON-RPC message must be an object, got {head[0]!r}")
                return 0
            return len(text)
        buffer = "".join(self._chunks)
        self._chunks = [buffer]
        start = len(buffer) - len(buffer.lstrip())
        if buffer[start] != "{":
            self._fail(f"a JSON-RPC message must be an object, got {buffer[start]!r}")
            return 0
        try:
            self._value, end = self._decoder.raw_decode(buffer, start)
        except ValueError:
            return len(text)  # not complete yet (or broken: the session's probe ends it)
        self._done = True
        self._chunks = []
        if end <= before:
            # A complete message followed by something that is not the next message:
            # python-ovs's parser would reject that trailer as well.
            self._value = None
            self._fail("unexpected text after a JSON-RPC message")
            return 0
        return end - before

    def _fail(self, message: str) -> None:
        self._done = True
        self._error = message

    def is_done(self) -> bool:
        return self._done

    def finish(self) -> Any:
        """The message, or an error string (python-ovs's convention)."""
        if self._error is not None:
            return self._error
        if not self._done:
            return "unexpected end of input"
        return self._value


_PythonParser = ovs.json.Parser


class _Parser(_PythonParser):  # type: ignore[misc,valid-type]
    """Stands in for ``ovs.json.Parser``: streams get ``StreamParser``, whole documents
    python-ovs's own parser (a subclass, because its methods look their states up through
    the module's ``Parser`` name, which is now this class)."""

    def __new__(cls, check_trailer: bool = False) -> Any:
        if check_trailer:
            return object.__new__(cls)  # then python-ovs's __init__ runs
        return StreamParser()  # not a _Parser: no __init__ call


def install() -> bool:
    """Use ``StreamParser`` for python-ovs's JSON-RPC streams in this process.

    Idempotent; False (nothing done) when python-ovs has its C parser.
    """
    global _installed
    with _install_lock:
        if ovs.json.PARSER != ovs.json.PARSER_PY:
            return False
        if not _installed:
            ovs.json.Parser = _Parser
            _installed = True
        return True
