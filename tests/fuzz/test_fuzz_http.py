"""A hostile client against a real server: fuzzed requests, and what a request can make it say.

Fuzzing (hypothesis, against the demo app served on 127.0.0.1 by a real ``Server``, on asyncio
and on trio, in a background thread so each example is plain blocking socket I/O):

- Mutated request lines, header sections, framing (Content-Length lies, chunked bodies with bad
  sizes, extensions and trailers) and bytes flipped, cut or repeated anywhere: every request is
  answered with a well-formed response whose status is below 500 (a 501 only for a
  Transfer-Encoding rawsse does not implement, as RFC 9112 section 6.1 asks), or the connection
  is closed; never a hung connection (every exchange ends within a few seconds); a response that
  says ``Connection: close`` is followed by the close; nothing is logged at ERROR level (no
  handler crashed); and ``GET /ping`` works after every example.
- Chat-shaped JSON bodies for every dialect, mutated field by field: a 200 or a 4xx, never a 5xx;
  every 200 stream is complete (chunked terminator) and follows its vendor's stream grammar.
- After all examples: no connection, stream or file descriptor is left behind.

Security (what a request can make the server say):

- An ``<script>`` marker in paths, queries, headers, model names and JSON fields never comes
  back in an HTML or SSE body; where it is echoed, it is inside a JSON string
  (``application/json``), as OpenAI's own errors echo a model name.
- API keys are compared in constant time (``hmac.compare_digest`` against every configured key,
  no short-circuit), and a ``rawsse serve --api-key`` subprocess never writes the key to its
  logs, with the right key or a wrong one.
- CORS is off by default (no ``Access-Control-*`` header, even on a preflight) and enabled per
  origin by ``--cors-origin``: a preflight gets 204 with the allow headers, an unlisted origin
  gets nothing.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import assume, given
from hypothesis import strategies as st

from rawsse._http.limits import ServerLimits
from rawsse.app import App
from rawsse.chat.grammar import check_anthropic_stream, check_openai_stream
from rawsse.cli._demo_app import DemoOptions, create_demo_app
from rawsse.metrics import METRICS
from rawsse.parser import EventParser
from rawsse.request import Request
from rawsse.response import JSONResponse, Response
from rawsse.server import Server
from tests.hypothesis_profiles import fuzz

API_KEY = "sk-fuzz-0123456789"
MARKER = "<script>alert(1)</script>"
# Short timeouts so a request the fuzzer left unfinished is answered (408) or dropped quickly.
FUZZ_LIMITS = ServerLimits(
    header_timeout_s=0.3,
    body_timeout_s=0.3,
    keepalive_timeout_s=0.3,
    max_header_bytes=8 * 1024,
    max_body_bytes=64 * 1024,
    send_timeout_s=5.0,
)
EXCHANGE_DEADLINE_S = 6.0


# --- the server under test ----------------------------------------------------------------


class _ErrorRecords(logging.Handler):
    """Collects ERROR records of the ``rawsse`` loggers: a handler that crashed logs one."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def fuzz_app() -> App:
    app = create_demo_app(DemoOptions(api_keys=(API_KEY,), token_delay_s=0.0))

    async def ping(request: Request) -> Response:
        return Response("pong")

    async def echo(request: Request) -> Response:
        return JSONResponse({"len": len(request.body), "json": request.json()})

    app.add_route("/ping", ping, ("GET",))
    app.add_route("/echo", echo, ("POST",))
    return app


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class LiveServer:
    server: Server
    errors: _ErrorRecords
    backend: str

    @property
    def port(self) -> int:
        return self.server.port

    def assert_healthy(self) -> None:
        """No handler crashed, and a normal request is answered."""
        assert not self.errors.records, [r.getMessage() for r in self.errors.records]
        ex = exchange(self.port, b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert [r.status for r in ex.responses] == [200], ex
        assert ex.responses[0].body == b"pong"

    def assert_quiescent(self, streams_before: int, fds_before: int) -> None:
        """Every connection and stream is gone, and no file descriptor leaked."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if (
                self.server.stats.connections_active == 0
                and METRICS.streams_active == streams_before
                and open_fds() <= fds_before
            ):
                return
            time.sleep(0.02)
        raise AssertionError(
            f"not quiescent: {self.server.stats.connections_active} connections, "
            f"{METRICS.streams_active - streams_before} streams, "
            f"{open_fds() - fds_before} extra fds"
        )


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def live(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    backend = str(request.param)
    errors = _ErrorRecords()
    rawsse_logger = logging.getLogger("rawsse")
    rawsse_logger.addHandler(errors)
    server = Server(fuzz_app(), host="127.0.0.1", port=0, access_log=False, limits=FUZZ_LIMITS)
    try:
        with start_blocking_portal(backend) as portal:
            future, _ = portal.start_task(server.serve)
            try:
                yield LiveServer(server, errors, backend)
            finally:
                portal.call(server.force_exit)
                future.result(timeout=10)
    finally:
        rawsse_logger.removeHandler(errors)


# --- a blocking client that reads responses without trusting them -------------------------


@dataclass
class Parsed:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    complete: bool = False


@dataclass
class Exchange:
    sent: bytes
    received: bytes
    closed: bool
    responses: list[Parsed] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Exchange(sent={self.sent[:300]!r}, received={self.received[:600]!r})"


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) [^\r\n]*\Z")


def request_methods(raw: bytes) -> list[bytes]:
    """The methods of the requests h11 (the server's parser) finds in ``raw``, in order: a
    response to HEAD has no body, whatever its Content-Length says."""
    import h11

    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    found: list[bytes] = []
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                found.append(bytes(event.method))
            elif isinstance(event, h11.EndOfMessage):
                conn.send(h11.Response(status_code=204, headers=[]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            elif not isinstance(event, h11.Data):
                return found
    except h11.ProtocolError:
        return found


def parse_stream(data: bytes, eof: bool, methods: list[bytes] = ()) -> list[Parsed]:  # type: ignore[assignment]
    """Responses in ``data``; the last one may be incomplete. Asserts the framing is valid."""
    out: list[Parsed] = []
    final = 0  # final (non-1xx) responses so far: the index of their request
    rest = data
    while rest:
        head, sep, after = rest.partition(b"\r\n\r\n")
        if not sep:
            assert not eof, f"header section cut by the close: {rest[:200]!r}"
            break
        lines = head.split(b"\r\n")
        match = _STATUS_LINE.match(lines[0])
        assert match, f"bad status line {lines[0]!r}"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            assert colon and name and name == name.strip(), f"bad header line {line!r}"
            headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        response = Parsed(int(match.group(1)), headers)
        out.append(response)
        rest = after
        if response.status < 200:
            response.complete = True
            continue
        method = methods[final] if final < len(methods) else b"GET"
        final += 1
        if response.status in (204, 304) or method == b"HEAD":
            response.complete = True
            continue
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size_line, crlf, tail = rest.partition(b"\r\n")
                if not crlf:
                    return out
                size = int(size_line, 16)
                if size == 0:
                    if not tail.startswith(b"\r\n"):
                        return out
                    rest = tail[2:]
                    break
                if len(tail) < size + 2:
                    return out
                assert tail[size : size + 2] == b"\r\n", "chunk not followed by CRLF"
                body += tail[:size]
                rest = tail[size + 2 :]
            response.body = body
            response.complete = True
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if len(rest) < length:
                response.body = rest
                return out  # (a HEAD response never gets its body: the close ends it)
            response.body, rest = rest[:length], rest[length:]
            response.complete = True
        else:
            response.body, rest = rest, b""
            response.complete = eof
    return out


def exchange(port: int, raw: bytes, deadline_s: float = EXCHANGE_DEADLINE_S) -> Exchange:
    """Send ``raw`` on a new connection; read until the server closes, or until every
    response is complete and nothing more comes for a moment. A server that neither answers
    nor closes by ``deadline_s`` fails the test: that is a hung connection."""
    methods = request_methods(raw)
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    data = b""
    closed = False
    try:
        # The server may answer and close before taking everything: allowed.
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        end = time.monotonic() + deadline_s
        while True:
            remaining = end - time.monotonic()
            assert remaining > 0, (
                f"hung: no answer and no close in {deadline_s} s for {raw[:300]!r}; got {data[:300]!r}"
            )
            responses = parse_stream(data, False, methods)
            settled = bool(responses) and all(r.complete for r in responses)
            wants_close = bool(responses) and responses[-1].headers.get("connection") == "close"
            quiet = settled and not wants_close
            sock.settimeout(min(remaining, 0.05) if quiet else min(remaining, 0.5))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if quiet:
                    break
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    finally:
        sock.close()
    return Exchange(raw, data, closed, parse_stream(data, closed, methods))


def _unsupported_transfer_coding(raw: bytes) -> bool:
    head = raw.partition(b"\r\n\r\n")[0].lower()
    codings = re.findall(rb"\ntransfer-encoding[ \t]*:([^\r\n]*)", head)
    return bool(codings) and [c.strip() for c in codings] != [b"chunked"]


def check_exchange(ex: Exchange) -> None:
    """The invariant of every fuzzed exchange (see the module docstring)."""
    for response in ex.responses:
        if response.status == 501:
            assert _unsupported_transfer_coding(ex.sent), ex
        else:
            assert response.status < 500, ex
    if ex.responses and ex.responses[-1].headers.get("connection") == "close":
        assert ex.closed, f"Connection: close but the connection stayed open: {ex!r}"
    if not ex.closed:
        assert ex.responses and all(r.complete for r in ex.responses), ex


# --- strategies: the request path ---------------------------------------------------------

_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
junk = st.binary(max_size=24)
tokens = st.text(_TCHARS, min_size=1, max_size=12).map(str.encode)

methods = st.one_of(
    st.sampled_from(
        [b"GET", b"POST", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"PATCH", b"TRACE", b"CONNECT"]
    ),
    tokens,
    junk,
)
known_paths = st.sampled_from(
    [
        b"/ping",
        b"/echo",
        b"/healthz",
        b"/metrics",
        b"/v1/models",
        b"/v1/models/echo",
        b"/v1/chat/completions",
        b"/v1/messages",
        b"/v1beta/models/echo:streamGenerateContent?alt=sse",
        b"/v1beta/models/lorem:generateContent",
        b"/v1/chat/completions/chatcmpl-nope/events",
        b"/backend-api/conversation",
        b"/v1/envelope/completions",
        b"*",
        b"http://example.com/ping",
        b"//ping",
        b"/%",
        b"/%zz%00%ff",
        b"/ping?%=%&a",
        b"/../../etc/passwd",
    ]
)
targets = st.one_of(
    known_paths,
    st.tuples(known_paths, junk).map(b"".join),
    junk.map(lambda j: b"/" + j),
    st.integers(1, 12_000).map(lambda n: b"/" + b"a" * n),
)
versions = st.one_of(
    st.sampled_from(
        [
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/2.0",
            b"HTTP/0.9",
            b"HTTP/1.10",
            b"http/1.1",
            b"HTTP/",
            b"",
        ]
    ),
    junk,
)
spaces = st.sampled_from([b" ", b" ", b" ", b"  ", b"\t", b""])
line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])

header_names = st.one_of(
    st.sampled_from(
        [
            b"Host",
            b"Content-Length",
            b"Transfer-Encoding",
            b"Connection",
            b"Expect",
            b"Content-Type",
            b"Authorization",
            b"Origin",
            b"Last-Event-ID",
            b"Access-Control-Request-Method",
            b"Upgrade",
            b"TE",
            b"Trailer",
            b"anthropic-version",
            b"x-api-key",
        ]
    ),
    tokens,
    junk,
)
header_values = st.one_of(
    st.sampled_from(
        [
            b"t",
            b"0",
            b"5",
            b"-1",
            b"+5",
            b"0x10",
            b"99999999999999999999999",
            b"5, 5",
            b"chunked",
            b"Chunked",
            b"gzip, chunked",
            b"chunked, chunked",
            b"identity",
            b"close",
            b"keep-alive",
            b"100-continue",
            b"application/json",
            b"Bearer " + API_KEY.encode(),
            b"Bearer wrong",
            b"h2c",
        ]
    ),
    junk,
    st.integers(1, 10_000).map(lambda n: b"v" * n),
)
header_lines = st.one_of(
    st.builds(
        lambda name, sep, value, end: name + sep + value + end,
        header_names,
        st.sampled_from([b": ", b":", b" : ", b":\t", b""]),
        header_values,
        line_ends,
    ),
    # obs-fold continuation lines, and lines of raw junk
    st.builds(lambda value: b" " + value + b"\r\n", header_values),
    junk.map(lambda j: j + b"\r\n"),
)


@st.composite
def chunked_body(draw: st.DrawFn) -> bytes:
    """A chunked body with sizes, extensions, CRLFs and trailers right or wrong."""
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        data = draw(st.binary(max_size=40))
        size = len(data)
        size_repr = draw(
            st.sampled_from(
                [
                    b"%x" % size,
                    b"%x" % size,
                    b"%X" % size,
                    b"000%x" % size,
                    b"%x" % (size + 1),
                    b"%x" % max(size - 1, 0),
                    b"-%x" % size,
                    b"0x%x" % size,
                    b"ffffffffffffffffffffffff",
                    b" %x" % size,
                    b"",
                    b"zz",
                ]
            )
        )
        extension = draw(
            st.sampled_from([b"", b"", b";a=b", b";", b';a="q;\\"x"', b"; a = b", b";\x00"])
            | junk.map(lambda j: b";" + j)
        )
        crlf = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]))
        out += size_repr + extension + b"\r\n" + data + crlf
    last = draw(st.sampled_from([b"0", b"0", b"00", b"0;ext=1", b""]))
    trailers = draw(
        st.lists(
            st.sampled_from(
                [b"X-Trailer: 1", b"Content-Length: 5", b"bad trailer", b"X: \x00", b": x"]
            )
            | junk,
            max_size=3,
        )
    )
    end = draw(st.sampled_from([b"\r\n", b"\r\n", b""]))
    return out + last + b"\r\n" + b"".join(t + b"\r\n" for t in trailers) + end


@st.composite
def framed_body(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """Framing header lines and a body: none, Content-Length (honest or not), or chunked."""
    kind = draw(st.sampled_from(["none", "length", "chunked", "both"]))
    body = draw(st.binary(max_size=80) | st.just(b'{"a": [1, 2, {"b": null}]}'))
    if kind == "none":
        return [], b""
    declared = draw(
        st.sampled_from([len(body), len(body), len(body) + 1, max(len(body) - 1, 0), 10**9])
    )
    length = b"Content-Length: %d\r\n" % declared
    if kind == "length":
        return [length], body
    chunked = draw(chunked_body())
    te = b"Transfer-Encoding: " + draw(st.sampled_from([b"chunked", b"chunked", b"gzip"])) + b"\r\n"
    if kind == "chunked":
        return [te], chunked
    return [length, te], chunked


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, inserted, deleted, repeated, or cut off."""
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate"]))
        if op == "flip":
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        elif op == "insert":
            data = (
                data[:at]
                + draw(junk | st.sampled_from([b"\r\n", b"\r", b"\n", b"\x00", b":"]))
                + data[at:]
            )
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 8)) :]
        elif op == "repeat":
            data = data[:at] + data[at : at + 16] * draw(st.integers(2, 4)) + data[at:]
        else:
            data = data[:at]
    return data


valid_requests = st.sampled_from(
    [
        (b"GET", b"/ping", b""),
        (b"GET", b"/healthz", b""),
        (b"GET", b"/v1/models", b""),
        (b"HEAD", b"/v1/models/echo", b""),
        (b"GET", b"/metrics", b""),
        (b"OPTIONS", b"/v1/chat/completions", b""),
        (b"DELETE", b"/ping", b""),
        (b"POST", b"/echo", b'{"a": [1, 2, {"b": null}]}'),
        (b"POST", b"/echo", b"not json"),
        (
            b"POST",
            b"/v1/chat/completions",
            b'{"model":"echo","stream":true,"messages":[{"role":"user","content":"hi there"}]}',
        ),
        (b"GET", b"/v1/chat/completions/chatcmpl-nope/events", b""),
    ]
)


@st.composite
def http_requests(draw: st.DrawFn) -> bytes:
    """A valid request, then up to four structural mutations, then maybe byte mutations:
    the examples range from valid requests to garbage, most of them near the edge."""
    method, target, body = draw(valid_requests)
    version, sep1, sep2, end = b"HTTP/1.1", b" ", b" ", b"\r\n"
    lines = [b"Host: t\r\n", b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"]
    framing = [b"Content-Length: %d\r\n" % len(body)] if body else []
    tail = b""
    for _ in range(draw(st.integers(0, 4))):
        op = draw(
            st.sampled_from(
                [
                    "method",
                    "target",
                    "version",
                    "spaces",
                    "line_end",
                    "header",
                    "header",
                    "no_host",
                    "framing",
                    "framing",
                    "pipeline",
                ]
            )
        )
        if op == "method":
            method = draw(methods)
        elif op == "target":
            target = draw(targets)
        elif op == "version":
            version = draw(versions)
        elif op == "spaces":
            sep1, sep2 = draw(spaces), draw(spaces)
        elif op == "line_end":
            end = draw(line_ends)
        elif op == "header":
            lines.insert(draw(st.integers(0, len(lines))), draw(header_lines))
        elif op == "no_host":
            lines = [line for line in lines if not line.startswith(b"Host")]
        elif op == "framing":
            framing, body = draw(framed_body())
        else:
            tail += draw(
                st.sampled_from([b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n", b"\r\n", b"junk"])
            )
    head = method + sep1 + target + sep2 + version + end + b"".join(lines + framing)
    raw = head + b"\r\n" + body + tail
    return draw(mutated(raw)) if draw(st.integers(0, 3)) == 3 else raw


@st.composite
def chunked_requests(draw: st.DrawFn) -> bytes:
    target = draw(st.sampled_from([b"/echo", b"/v1/chat/completions", b"/ping"]))
    head = b"POST " + target + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    head += draw(st.sampled_from([b"", b"Expect: 100-continue\r\n", b"Trailer: X-Trailer\r\n"]))
    return head + b"\r\n" + draw(chunked_body())


def test_mutated_requests_get_4xx_or_close(live: LiveServer) -> None:
    streams, fds = METRICS.streams_active, open_fds()

    @fuzz(120)
    @given(http_requests())
    def run(raw: bytes) -> None:
        check_exchange(exchange(live.port, raw))
        live.assert_healthy()

    run()
    live.assert_quiescent(streams, fds)


def test_chunked_framing_gets_4xx_or_close(live: LiveServer) -> None:
    streams, fds = METRICS.streams_active, open_fds()

    @fuzz(80)
    @given(chunked_requests())
    def run(raw: bytes) -> None:
        ex = exchange(live.port, raw)
        check_exchange(ex)
        # Whatever the framing, the request is answered: nothing is left waiting for a body.
        assert ex.responses or ex.closed, ex
        live.assert_healthy()

    run()
    live.assert_quiescent(streams, fds)


def test_pipelined_requests_after_garbage_are_never_served(live: LiveServer) -> None:
    """Once a request is refused as malformed, what follows it on the connection is dropped:
    no request smuggled behind bad framing reaches a handler."""

    @fuzz(60)
    @given(chunked_body() | st.binary(max_size=40))
    def run(garbage: bytes) -> None:
        smuggled = b"GET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n"
        raw = (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + garbage + smuggled
        )
        ex = exchange(live.port, raw)
        check_exchange(ex)
        assert [r.status for r in ex.responses] == [400], ex
        assert b'"object":"list"' not in ex.received

    run()


# --- strategies: chat JSON ----------------------------------------------------------------

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
    st.just(MARKER),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


texts = st.text(max_size=30) | st.just(MARKER)
text_parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), max_size=2)
streams = st.sampled_from([True, True, False])
demo_options = st.fixed_dictionaries(
    {}, optional={"answer": st.sampled_from(["text", "reasoning", "tool_call"])}
)
openai_bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["echo", "lorem"]),
        "stream": streams,
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["system", "developer", "user", "assistant"]),
                    "content": texts | text_parts,
                },
                optional={"name": st.sampled_from(["alice", "bob"])},
            ),
            min_size=1,
            max_size=3,
        ),
    },
    optional={
        "max_tokens": st.integers(1, 40),
        "max_completion_tokens": st.integers(1, 40),
        "n": st.integers(1, 3),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "presence_penalty": st.floats(-2, 2),
        "stop": texts | st.lists(texts, max_size=4),
        "seed": st.integers(-(2**63), 2**63 - 1),
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries(
                        {"name": st.sampled_from(["lookup", "get_weather"])},
                        optional={"description": texts, "parameters": st.just({"type": "object"})},
                    ),
                }
            ),
            min_size=1,
            max_size=2,
        ),
        "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
        "user": texts,
        "rawsse": demo_options,
    },
)
anthropic_bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["echo", "lorem"]),
        "max_tokens": st.integers(1, 40),
        "stream": streams,
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.just("user"), "content": texts | text_parts}),
            min_size=1,
            max_size=2,
        ),
    },
    optional={
        "system": texts,
        "temperature": st.floats(0, 1),
        "stop_sequences": st.lists(texts, max_size=3),
        "tools": st.just([{"name": "lookup", "input_schema": {"type": "object"}}]),
        "rawsse": demo_options,
    },
)
gemini_bodies = st.fixed_dictionaries(
    {
        "contents": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.just("user"),
                    "parts": st.lists(
                        st.fixed_dictionaries({"text": texts}), min_size=1, max_size=2
                    ),
                }
            ),
            min_size=1,
            max_size=2,
        )
    },
    optional={
        "generationConfig": st.fixed_dictionaries(
            {},
            optional={
                "maxOutputTokens": st.integers(1, 40),
                "temperature": st.floats(0, 2),
                "candidateCount": st.integers(1, 3),
                "stopSequences": st.lists(texts, max_size=5),
            },
        ),
        "systemInstruction": st.just({"parts": [{"text": "be brief"}]}),
    },
)


def _slots(value: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a JSON tree, outermost first."""
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((value, key))
            _slots(item, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.append((value, index))
            _slots(item, out)
    return out


@st.composite
def corrupted(draw: st.DrawFn, body: Any) -> Any:
    """``body`` with up to three fields replaced by anything, deleted, or added."""
    body = copy.deepcopy(body)  # (strategies such as st.just share their value between draws)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        slots = _slots(body, [])
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "marker"]))
        if op == "replace":
            container[key] = draw(json_values)
        elif op == "marker":
            container[key] = MARKER
        elif op == "delete":
            del container[key]
        elif isinstance(container, dict):
            container[draw(st.text(max_size=8) | st.just(MARKER))] = draw(json_values)
        else:
            container.append(draw(json_values))
    return body


_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "maxOutputTokens")


def asks_for_many_tokens(value: Any) -> bool:
    """True when a body asks the demo models for more than 64 tokens: the fuzzer keeps
    answers short so that each example stays fast (huge requests are tested in test_faults)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _TOKEN_FIELDS and isinstance(item, (int, float)) and item > 64:
                return True
            if asks_for_many_tokens(item):
                return True
    elif isinstance(value, list):
        return any(asks_for_many_tokens(item) for item in value)
    return False


@st.composite
def chat_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    dialect = draw(st.sampled_from(["openai", "anthropic", "gemini", "chatgpt-web", "envelope"]))
    if dialect == "anthropic":
        body: Any = draw(anthropic_bodies)
        path = "/v1/messages"
    elif dialect == "gemini":
        body = draw(gemini_bodies)
        model = draw(st.sampled_from(["echo", "lorem", "nope", MARKER.replace("/", "")]))
        verb = draw(st.sampled_from(["streamGenerateContent?alt=sse", "generateContent"]))
        path = f"/v1beta/models/{model}:{verb}"
    else:
        body = draw(openai_bodies)
        path = {
            "openai": "/v1/chat/completions",
            "chatgpt-web": "/backend-api/conversation",
            "envelope": "/v1/envelope/completions",
        }[dialect]
    body = draw(corrupted(body))
    if draw(st.integers(0, 19)) == 19:
        body = draw(json_values)  # not even an object
    assume(not asks_for_many_tokens(body))
    payload = json.dumps(body).encode()  # NaN, Infinity and 2**70 are not JSON orjson accepts
    if draw(st.integers(0, 9)) == 9:
        payload = draw(mutated(payload))
    key = draw(st.sampled_from([API_KEY, API_KEY, API_KEY, API_KEY, API_KEY, "wrong", None]))
    headers = ["Host: t", "Content-Type: application/json", "Connection: close"]
    if key is not None:
        headers.append(
            {"anthropic": f"x-api-key: {key}", "gemini": f"x-goog-api-key: {key}"}.get(
                dialect, f"Authorization: Bearer {key}"
            )
        )
    if dialect == "anthropic" and draw(st.integers(0, 5)) < 5:
        headers.append("anthropic-version: 2023-06-01")
    head = f"POST {path} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers)
    head += f"Content-Length: {len(payload)}\r\n\r\n"
    return dialect, head.encode("latin-1") + payload


def check_chat_response(dialect: str, ex: Exchange) -> None:
    check_exchange(ex)
    assert ex.closed and len(ex.responses) == 1, ex  # Connection: close, one response
    [response] = ex.responses
    assert response.complete, f"body not finished: {ex!r}"
    assert response.status == 200 or 400 <= response.status < 500, ex
    content_type = response.headers.get("content-type", "")
    if response.status != 200 or content_type.startswith("application/json"):
        assert content_type.startswith("application/json"), ex
        json.loads(response.body)  # a JSON body, complete
        return
    assert content_type.startswith("text/event-stream"), ex
    assert response.headers.get("transfer-encoding") == "chunked", ex
    events = EventParser().feed(response.body)
    assert events, ex
    if dialect == "openai":
        check_openai_stream(events)
    elif dialect == "anthropic":
        check_anthropic_stream(events)
    else:
        for event in events:
            if event.data != "[DONE]":
                json.loads(event.data)


def test_chat_bodies_get_200_or_4xx(live: LiveServer) -> None:
    streams, fds = METRICS.streams_active, open_fds()

    @fuzz(120)
    @given(chat_requests())
    def run(case: tuple[str, bytes]) -> None:
        dialect, raw = case
        check_chat_response(dialect, exchange(live.port, raw))
        live.assert_healthy()

    run()
    live.assert_quiescent(streams, fds)


# --- security: what a request can make the server say -------------------------------------


def _reflection_requests() -> list[bytes]:
    mark = MARKER.encode()
    quoted = b"%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    chat = json.dumps(
        {"model": MARKER, "messages": [{"role": MARKER, "content": "x"}], MARKER: MARKER}
    ).encode()
    bad_role = json.dumps({"model": "echo", "messages": [{"role": MARKER, "content": "x"}]})
    bad_tool = json.dumps(
        {
            "model": "echo",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": MARKER}}],
        }
    )
    requests = [
        b"GET /" + quoted + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /v1/models/" + quoted + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /v1/models/" + mark.replace(b"/", b"") + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /v1/chat/completions/" + quoted + b"/events HTTP/1.1\r\nHost: t\r\n"
        b"Authorization: Bearer " + API_KEY.encode() + b"\r\n\r\n",
        b"GET /ping?q=" + quoted + b" HTTP/1.1\r\nHost: t\r\nX-Evil: " + mark + b"\r\n"
        b"Origin: " + mark + b"\r\nLast-Event-ID: " + mark + b"\r\n\r\n",
        b"DELETE /ping?" + quoted + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: t\r\nOrigin: " + mark + b"\r\n"
        b"Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: "
        + mark
        + b"\r\n\r\n",
    ]
    for body in (chat, bad_role.encode(), bad_tool.encode()):
        for path, auth in (
            (b"/v1/chat/completions", b"Authorization: Bearer "),
            (b"/v1/messages", b"anthropic-version: 1\r\nx-api-key: "),
            (b"/v1beta/models/" + quoted + b":generateContent", b"x-goog-api-key: "),
        ):
            requests.append(
                b"POST "
                + path
                + b" HTTP/1.1\r\nHost: t\r\n"
                + auth
                + API_KEY.encode()
                + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body
            )
    requests.append(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + mark
        + b"\r\nContent-Length: %d\r\n\r\n" % len(chat)
        + chat
    )
    return [r.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1) for r in requests]


@pytest.mark.parametrize("raw", _reflection_requests())
def test_markup_in_requests_is_never_reflected_raw(live: LiveServer, raw: bytes) -> None:
    ex = exchange(live.port, raw)
    check_exchange(ex)
    for response in ex.responses:
        assert response.status < 500, ex
        for name, value in response.headers.items():
            # Header values are data, not markup, but none is built from the marker's text
            # except the preflight's echo of the requested header names.
            assert name.startswith("access-control-allow-headers") or "<script" not in value, ex
        if b"<script" not in response.body:
            continue
        # Echoed inside a JSON string of a JSON body (as OpenAI echoes a model name), which a
        # browser never renders as markup.
        assert response.headers["content-type"].startswith("application/json"), ex
        assert json.loads(response.body), ex


def test_protocol_error_bodies_do_not_echo_request_bytes(live: LiveServer) -> None:
    mark = MARKER.encode()
    for raw in (
        b"GET /ping HTTP/1.1\r\nHost: t\r\n" + mark + b"\r\n\r\n",
        b"GET /ping HTTP/1.1" + mark + b"\r\nHost: t\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + mark + b"\r\n",
    ):
        ex = exchange(live.port, raw)
        assert [r.status for r in ex.responses] == [400], ex
        assert b"<script" not in ex.responses[0].body, ex
        assert ex.responses[0].headers.get("x-content-type-options") == "nosniff", ex


def test_error_answer_to_head_has_no_body(live: LiveServer) -> None:
    raw = b"HEAD /v1/models HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\n"
    ex = exchange(live.port, raw)
    assert [r.status for r in ex.responses] == [408], ex
    assert ex.received.endswith(b"\r\n\r\n"), ex


def test_api_keys_are_compared_in_constant_time(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request with a key compares it with every configured key through
    ``hmac.compare_digest``, whether it matches or not (no early exit on a match)."""
    import hmac

    import rawsse.chat.auth as auth

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording)
    keys = ("sk-first", "sk-second", "sk-third")
    assert auth.check_api_key(keys, "sk-first")
    assert [b for _, b in calls] == [k.encode() for k in keys]
    calls.clear()
    assert not auth.check_api_key(keys, "sk-firs")
    assert len(calls) == 3
    calls.clear()
    # And the live server's chat routes go through it, right key or wrong.
    body = b'{"model":"echo","messages":[{"role":"user","content":"hi"}]}'
    for key, status in ((API_KEY, 200), ("sk-fuzz-0123456788", 401), (API_KEY[:-1], 401)):
        raw = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        ex = exchange(live.port, raw + body)
        assert [r.status for r in ex.responses] == [status], ex
        assert calls == [(key.encode(), API_KEY.encode())]
        calls.clear()


# --- security: the command line (API keys in logs, CORS) ----------------------------------


class ServeProcess:
    """``rawsse serve`` as a subprocess on a free port, stderr collected to a file."""

    def __init__(self, tmp_path: Any, *args: str, env: dict[str, str] | None = None) -> None:
        self.stderr_path = tmp_path / "stderr.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rawsse", "serve", "--port", "0", "--token-delay", "0", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self._ready_line()
        self.port = int(line.rsplit(":", 1)[1])

    def _ready_line(self) -> str:
        import selectors

        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=20):
                self.stop()
                raise AssertionError("rawsse serve did not start in 20 s")
        line = self.proc.stdout.readline().decode().strip()
        assert line.startswith("rawsse listening on http://"), line
        return line

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return self.stderr_path.read_text(errors="replace")


def _chat_with_key(port: int, path: bytes, header: bytes, body: bytes) -> int:
    raw = b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\nanthropic-version: 1\r\n"
    raw += header + b"Content-Length: %d\r\n\r\n" % len(body) + body
    ex = exchange(port, raw)
    assert len(ex.responses) == 1, ex
    return ex.responses[0].status


SECRET = "sk-secret-4f9a1c"
_OPENAI_BODY = b'{"model":"echo","stream":true,"messages":[{"role":"user","content":"hi"}]}'
_ANTHROPIC_BODY = b'{"model":"echo","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
_GEMINI_BODY = b'{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}'


def test_api_keys_in_headers_are_never_logged(tmp_path: Any) -> None:
    """Keys from ``--api-key`` and ``RAWSSE_API_KEYS``, presented right and wrong in every
    header a dialect reads, with debug logging and the access log on: never in the logs."""
    serve = ServeProcess(
        tmp_path, "--api-key", SECRET, "--log-level", "debug", env={"RAWSSE_API_KEYS": SECRET + "2"}
    )
    try:
        for key, status in (
            (SECRET, 200),
            (SECRET + "2", 200),
            (SECRET + "x", 401),
            (SECRET[:-1], 401),
        ):
            k = key.encode()
            assert (
                _chat_with_key(
                    serve.port,
                    b"/v1/chat/completions",
                    b"Authorization: Bearer " + k + b"\r\n",
                    _OPENAI_BODY,
                )
                == status
            )
            assert (
                _chat_with_key(
                    serve.port, b"/v1/messages", b"x-api-key: " + k + b"\r\n", _ANTHROPIC_BODY
                )
                == status
            )
            assert (
                _chat_with_key(
                    serve.port,
                    b"/v1beta/models/echo:generateContent",
                    b"x-goog-api-key: " + k + b"\r\n",
                    _GEMINI_BODY,
                )
                == status
            )
        # Keys where no dialect reads them, and garbage that fails to parse, are not logged either.
        ex = exchange(
            serve.port,
            b"GET /nope HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
            + SECRET.encode()
            + b"\r\n\r\n",
        )
        assert [r.status for r in ex.responses] == [404]
        ex = exchange(
            serve.port,
            b"GET /ping HTTP/1.1\r\nHost: t\r\nAuthorization Bearer "
            + SECRET.encode()
            + b"\r\n\r\n",
        )
        assert [r.status for r in ex.responses] == [400]
    finally:
        log = serve.stop()
    assert "rawsse.access" in log  # the access log was on and wrote lines
    assert SECRET[:-1] not in log, log


def test_api_keys_in_query_are_never_logged(tmp_path: Any) -> None:
    serve = ServeProcess(tmp_path, "--api-key", SECRET)
    try:
        for key, status in ((SECRET, 200), (SECRET + "x", 401)):
            path = b"/v1beta/models/echo:generateContent?key=" + key.encode()
            assert _chat_with_key(serve.port, path, b"", _GEMINI_BODY) == status
    finally:
        log = serve.stop()
    assert "rawsse.access" in log
    assert SECRET not in log, log


def _preflight(port: int, origin: str, path: str = "/v1/chat/completions") -> Parsed:
    raw = (
        f"OPTIONS {path} HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n"
        "Access-Control-Request-Method: POST\r\n"
        "Access-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n"
    ).encode()
    ex = exchange(port, raw)
    assert len(ex.responses) == 1, ex
    return ex.responses[0]


def _post_with_origin(port: int, origin: str, body: bytes = _OPENAI_BODY) -> Parsed:
    raw = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    ex = exchange(port, raw)
    assert len(ex.responses) == 1 and ex.responses[0].complete, ex
    return ex.responses[0]


def _cors_headers(response: Parsed) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def test_cors_is_off_by_default(tmp_path: Any) -> None:
    serve = ServeProcess(tmp_path)
    try:
        preflight = _preflight(serve.port, "https://app.example")
        assert _cors_headers(preflight) == {}, preflight
        # The route exists but answers no OPTIONS: 204 with Allow, and nothing for CORS.
        assert preflight.status == 204 and preflight.headers["allow"] == "POST"
        stream = _post_with_origin(serve.port, "https://app.example")
        assert stream.status == 200 and _cors_headers(stream) == {}
    finally:
        serve.stop()


def test_cors_per_origin_with_preflight(tmp_path: Any) -> None:
    allowed = "https://app.example"
    serve = ServeProcess(tmp_path, "--cors-origin", allowed, "--cors-origin", "https://two.example")
    try:
        preflight = _preflight(serve.port, allowed)
        assert preflight.status == 204
        assert preflight.headers["access-control-allow-origin"] == allowed
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
        assert "origin" in preflight.headers["vary"].lower()
        # A stream for an allowed origin carries the header; another origin gets nothing.
        stream = _post_with_origin(serve.port, allowed)
        assert stream.status == 200
        assert stream.headers["access-control-allow-origin"] == allowed
        other = _preflight(serve.port, "https://evil.example")
        assert _cors_headers(other) == {}, other
        other_post = _post_with_origin(serve.port, "https://evil.example")
        assert _cors_headers(other_post) == {}, other_post
        # A preflight for a path that does not exist is a 404, not a blanket yes.
        assert _preflight(serve.port, allowed, "/nope").status == 404
    finally:
        serve.stop()


def test_cors_headers_do_not_leak_between_streams() -> None:
    from rawsse.stream import EventStream

    app = App(cors_origins=["https://a.example", "https://b.example"])

    async def sse(request: Request) -> EventStream:
        async def one() -> Any:
            yield "x"

        return EventStream(one())

    app.add_route("/sse", sse, ("GET",))
    server = Server(app, host="127.0.0.1", port=0, access_log=False)
    import rawsse.stream

    shared = rawsse.stream._SSE_HEADER_BYTES
    saved = list(shared)
    with start_blocking_portal("asyncio") as portal:
        future, _ = portal.start_task(server.serve)
        try:
            seen = []
            for origin in ("https://a.example", "https://b.example", None):
                extra = f"Origin: {origin}\r\n" if origin else ""
                raw = f"GET /sse HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n".encode()
                ex = exchange(server.port, raw)
                seen.append(
                    [
                        line
                        for line in ex.received.split(b"\r\n\r\n")[0].split(b"\r\n")
                        if line.lower().startswith(b"access-control-allow-origin")
                    ]
                )
        finally:
            shared[:] = saved  # undo the leak for the tests that run after this one
            portal.call(server.force_exit)
            future.result(timeout=10)
    assert seen == [
        [b"access-control-allow-origin: https://a.example"],
        [b"access-control-allow-origin: https://b.example"],
        [],
    ]
