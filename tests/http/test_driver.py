"""The connection driver's rules, bytes in and bytes out: framing, limits, keep-alive, errors,
the end of input, and deadlines on a clock the test moves (no socket, no sleeps).

The expected bytes are written out by hand from RFC 9112; ``tests/http/test_http.py`` checks
the same rules over real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rawsse._errors import HTTPError
from rawsse.app import App
from rawsse.request import Request
from rawsse.response import JSONResponse, Response, StreamingResponse
from tests.http.driver_support import driven, exchange
from tests.support import parse_responses

pytestmark = pytest.mark.anyio


def make_app(seen: list[str] | None = None) -> App:
    seen = seen if seen is not None else []
    app = App()

    @app.get("/ping")
    async def ping(req: Request) -> Response:
        seen.append(req.path)
        return Response("pong")

    @app.get("/")
    async def root(req: Request) -> Response:
        return Response("root")

    @app.post("/raw")
    async def raw(req: Request) -> Response:
        return Response(req.body, content_type="application/octet-stream")

    @app.get("/where")
    async def where(req: Request) -> Response:
        return JSONResponse({"path": req.path, "query": req.query_string})

    @app.get("/stream")
    async def stream(req: Request) -> StreamingResponse:
        async def pieces() -> AsyncIterator[bytes]:
            seen.append("stream started")
            yield b"one\n"
            yield b"two\n"

        return StreamingResponse(pieces(), content_type="text/plain")

    @app.get("/teapot")
    async def teapot(req: Request) -> Response:
        raise HTTPError(418, "short and stout")

    @app.get("/boom")
    async def boom(req: Request) -> Response:
        raise RuntimeError("handler bug")

    return app


def get(path: str = "/ping", *, host: bytes = b"t", extra: bytes = b"") -> bytes:
    return b"GET %b HTTP/1.1\r\nHost: %b\r\n%b\r\n" % (path.encode(), host, extra)


def post(body: bytes, *, chunked: bool = False) -> bytes:
    if chunked:
        return b"POST /raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    return b"POST /raw HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


def statuses(data: bytes) -> list[int]:
    return [r.status for r in parse_responses(data)]


# -- framing and keep-alive -------------------------------------------------------------------


async def test_a_request_and_its_answer_byte_for_byte() -> None:
    data = await exchange(make_app(), get())
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert lines[1].startswith(b"date: ")
    assert lines[2:] == [
        b"server: rawsse",
        b"content-type: text/plain; charset=utf-8",
        b"content-length: 4",
    ]
    assert body == b"pong"


async def test_pipelined_requests_keep_alive_until_the_end_of_input() -> None:
    data = await exchange(make_app(), get() + post(b"abc") + get("/where?x=1"))
    responses = parse_responses(data)
    assert [(r.status, r.body) for r in responses] == [
        (200, b"pong"),
        (200, b"abc"),
        (200, b'{"path":"/where","query":"x=1"}'),
    ]
    assert all(r.header("connection") is None for r in responses)


async def test_http10_and_connection_close_end_the_connection() -> None:
    data = await exchange(make_app(), b"GET /ping HTTP/1.0\r\n\r\n" + get())
    assert [(r.status, r.header("connection")) for r in parse_responses(data)] == [(200, "close")]
    data = await exchange(make_app(), get(extra=b"Connection: close\r\n") + get())
    assert statuses(data) == [200]


async def test_head_gets_the_head_only() -> None:
    data = await exchange(make_app(), b"HEAD /ping HTTP/1.1\r\nHost: t\r\n\r\n")
    assert data.endswith(b"content-length: 4\r\n\r\n")


async def test_streams_are_chunked_on_http11_and_close_delimited_on_http10() -> None:
    # (The client's input stays open: a stream is not started once it has ended.)
    async with driven(make_app()) as conn:
        conn.feed(get("/stream") + get())
        await conn.wait_sent(b"pong")
        conn.finish()
        data = await conn.wait_closed()
    [stream, ping] = parse_responses(data)
    assert stream.header("transfer-encoding") == "chunked"
    assert stream.body == b"one\ntwo\n"
    assert ping.body == b"pong"
    async with driven(make_app()) as conn:
        conn.feed(b"GET /stream HTTP/1.0\r\n\r\n")
        data = await conn.wait_closed()
    assert data.endswith(b"\r\n\r\none\ntwo\n")


async def test_handler_errors_become_statuses() -> None:
    data = await exchange(make_app(), get("/teapot") + get("/boom") + get("/nope"))
    assert [(r.status, r.body) for r in parse_responses(data)] == [
        (418, b"short and stout"),
        (500, b"internal server error"),
        (404, b"not found"),
    ]


async def test_expect_100_continue_is_answered_before_the_body_is_read() -> None:
    async with driven(make_app()) as conn:
        conn.feed(
            b"POST /raw HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        assert await conn.wait_sent(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.feed(b"abc")
        conn.finish()
        data = await conn.wait_closed()
    assert [(r.status, r.body) for r in parse_responses(data)] == [(100, b""), (200, b"abc")]


# -- the request line and the target ----------------------------------------------------------


async def test_one_empty_line_before_a_request_line_is_ignored() -> None:
    # RFC 9112 2.2; some clients send a CRLF after a POST body.
    data = await exchange(make_app(), b"\r\n" + get() + post(b"ab") + b"\r\n" + get())
    assert statuses(data) == [200, 200, 200]
    # One, not any number: a second empty line is not a request line.
    data = await exchange(make_app(), b"\r\n\r\n" + get())
    assert statuses(data) == [400]


async def test_an_empty_line_arriving_alone_is_ignored_too() -> None:
    async with driven(make_app()) as conn:
        conn.feed(post(b"ab"))
        await conn.wait_sent(b"ab")
        conn.feed(b"\r\n")
        await conn.wait_parked()
        conn.feed(get())
        conn.finish()
        data = await conn.wait_closed()
    assert statuses(data) == [200, 200]


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"http://127.0.0.1/where?a=1", b'{"path":"/where","query":"a=1"}'),
        (b"HTTPS://example.com:8443/where", b'{"path":"/where","query":""}'),
        (b"http://[::1]:80/where?a=%20", b'{"path":"/where","query":"a=%20"}'),
        (b"http://example.com", b"root"),
        (b"http://example.com?q", b"root"),
    ],
)
async def test_absolute_form_targets_are_routed_by_their_path(target: bytes, path: bytes) -> None:
    # RFC 9112 3.2.2: "a server MUST accept the absolute-form in requests".
    data = await exchange(make_app(), b"GET %b HTTP/1.1\r\nHost: t\r\n\r\n" % target)
    [response] = parse_responses(data)
    assert (response.status, response.body) == (200, path)


@pytest.mark.parametrize(
    "target",
    [b"ftp://example.com/where", b"http://user@example.com/where", b"http:/where", b"where", b"*"],
)
async def test_other_target_forms_are_400(target: bytes) -> None:
    data = await exchange(make_app(), b"GET %b HTTP/1.1\r\nHost: t\r\n\r\n" % target)
    assert statuses(data) == [400]


async def test_asterisk_form_is_for_options() -> None:
    data = await exchange(make_app(), b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
    assert statuses(data) == [204]  # the server's methods (RFC 9110 9.3.7)
    assert b"\r\nallow: GET, HEAD" in data


@pytest.mark.parametrize(
    "host", [b"a/b@c", b"a b", b"x:notaport", b"[::1", b"a%zz", b"user@host", b"h\\x"]
)
async def test_invalid_host_is_400(host: bytes) -> None:
    # RFC 9112 3.2: a server MUST answer 400 to "a Host header field line with an invalid
    # field value".
    data = await exchange(make_app(), get(host=host) + get())
    assert statuses(data) == [400]
    assert b"connection: close" in data


@pytest.mark.parametrize(
    "host", [b"", b"example.com", b"example.com:8080", b"127.0.0.1:1", b"[::1]:80", b"a%41b"]
)
async def test_valid_hosts_are_served(host: bytes) -> None:
    assert statuses(await exchange(make_app(), get(host=host))) == [200]


# -- limits -----------------------------------------------------------------------------------


async def test_request_line_over_the_header_limit_is_414() -> None:
    long_target = "/ping?" + "a" * 5000
    data = await exchange(make_app(), get(long_target), max_header_bytes=4096)
    assert statuses(data) == [414]


async def test_request_line_arriving_in_pieces_over_the_limit_is_414() -> None:
    async with driven(make_app(), max_header_bytes=4096) as conn:
        conn.feed(b"GET /ping?" + b"a" * 3000)
        await conn.wait_parked()
        conn.feed(b"a" * 3000)
        data = await conn.wait_sent(b"\r\n\r\n")
    assert statuses(data) == [414]


async def test_request_line_counts_toward_the_header_section() -> None:
    # The line fits, the line and the fields together do not: the fields are too large.
    data = await exchange(
        make_app(),
        get("/ping?" + "a" * 3000, extra=b"X-Pad: " + b"b" * 1500 + b"\r\n"),
        max_header_bytes=4096,
    )
    assert statuses(data) == [431]
    data = await exchange(make_app(), get("/ping?" + "a" * 3000), max_header_bytes=4096)
    assert statuses(data) == [200]


async def test_chunk_extensions_count_against_the_body_limit() -> None:
    # One data byte and 4 KiB of extension per chunk: the data stays small, the wire does not.
    padding = b";x=" + b"y" * 4000
    chunks = b"".join(b"1" + padding + b"\r\na\r\n" for _ in range(10))
    data = await exchange(
        make_app(), post(chunks + b"0\r\n\r\n", chunked=True), max_body_bytes=16 * 1024
    )
    assert statuses(data) == [413]
    # The same body without padding is well within the limit.
    chunks = b"".join(b"1\r\na\r\n" for _ in range(10))
    data = await exchange(
        make_app(), post(chunks + b"0\r\n\r\n", chunked=True), max_body_bytes=16 * 1024
    )
    assert [(r.status, r.body) for r in parse_responses(data)] == [(200, b"a" * 10)]


async def test_impossible_chunk_size_is_400_at_once() -> None:
    async with driven(make_app()) as conn:
        conn.feed(post(b"1" * 17 + b"\r\nabc", chunked=True))
        data = await conn.wait_sent(b"\r\n\r\n")  # no deadline passes: the clock never moves
    assert statuses(data) == [400]


async def test_chunk_larger_than_the_body_limit_is_413_at_once() -> None:
    async with driven(make_app(), max_body_bytes=1000) as conn:
        conn.feed(post(b"ffffffffffff\r\nabc", chunked=True))
        data = await conn.wait_sent(b"\r\n\r\n")
    assert statuses(data) == [413]


@pytest.mark.parametrize(
    "body",
    [
        b'3;a=1;b="x y" ; c\r\nabc\r\n0\r\n\r\n',
        b"3\r\nabc\r\n0;end\r\nExpires: never\r\nX-Sum: 1\r\n\r\n",
        b"003\r\nabc\r\n000\r\n\r\n",
    ],
)
async def test_chunk_extensions_and_trailers_are_read_and_dropped(body: bytes) -> None:
    data = await exchange(make_app(), post(body, chunked=True) + get())
    assert [(r.status, r.body) for r in parse_responses(data)] == [(200, b"abc"), (200, b"pong")]


@pytest.mark.parametrize(
    "body",
    [
        b"3;\r\nabc\r\n0\r\n\r\n",  # an extension without a name
        b'3;a="x\r\nabc\r\n0\r\n\r\n',  # an unterminated quoted value
        b"3\r\nabcX\r\n0\r\n\r\n",  # chunk data longer than its size
        b"-3\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabc\r\n0\r\nno colon\r\n\r\n",  # a malformed trailer field
        b"3" + b" " * 5000 + b"\r\nabc\r\n0\r\n\r\n",  # a size line over 4 KiB
    ],
)
async def test_malformed_chunked_bodies_are_400(body: bytes) -> None:
    data = await exchange(make_app(), post(body, chunked=True) + get())
    assert statuses(data) == [400]


async def test_content_length_over_the_limit_is_413_before_the_body() -> None:
    async with driven(make_app(), max_body_bytes=10) as conn:
        conn.feed(b"POST /raw HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n")
        data = await conn.wait_sent(b"\r\n\r\n")
    assert statuses(data) == [413]


# -- the end of input -------------------------------------------------------------------------


async def test_a_request_followed_by_the_end_of_input_is_answered() -> None:
    seen: list[str] = []
    data = await exchange(make_app(seen), get())
    assert statuses(data) == [200]
    # Also when the connection was already waiting: input and FIN reported together.
    async with driven(make_app(seen)) as conn:
        await conn.wait_parked()
        conn.transport.inbound += get() + get("/where")
        conn.finish()
        data = await conn.wait_closed()
    assert statuses(data) == [200, 200]


async def test_a_stream_is_not_started_after_the_end_of_input() -> None:
    seen: list[str] = []
    data = await exchange(make_app(seen), get() + get("/stream") + get())
    assert statuses(data) == [200]  # the ping before it; nothing after
    assert "stream started" not in seen


async def test_a_reset_cancels_the_handler() -> None:
    import anyio

    entered = anyio.Event()
    app = App()

    @app.get("/slow")
    async def slow(req: Request) -> Response:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("not reached")

    async with driven(app) as conn:
        conn.feed(get("/slow"))
        await entered.wait()
        conn.reset()
        assert await conn.wait_closed() == b""


# -- deadlines, on the test's clock -----------------------------------------------------------


async def test_a_slow_header_section_gets_408() -> None:
    async with driven(make_app(), header_timeout_s=10) as conn:
        conn.feed(b"GET /ping HTTP/1.1\r\nHost: t\r\n")
        await conn.wait_parked()
        conn.reactor.advance(9.9)
        assert conn.sent == b""
        conn.reactor.advance(0.1)
        data = await conn.wait_sent(b"\r\n\r\n")
        conn.finish()
        await conn.wait_closed()
    assert statuses(data) == [408]


async def test_a_slow_body_gets_408() -> None:
    async with driven(make_app(), body_timeout_s=30) as conn:
        conn.feed(b"POST /raw HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        await conn.wait_parked()
        conn.reactor.advance(30)
        data = await conn.wait_sent(b"\r\n\r\n")
    assert statuses(data) == [408]


async def test_an_idle_keepalive_connection_closes_quietly() -> None:
    async with driven(make_app(), keepalive_timeout_s=5) as conn:
        conn.feed(get())
        await conn.wait_sent(b"pong")
        await conn.wait_parked()
        conn.reactor.advance(5)
        data = await conn.wait_closed()
    assert statuses(data) == [200]


async def test_a_connection_that_never_sends_closes_at_the_header_timeout() -> None:
    async with driven(make_app(), header_timeout_s=10) as conn:
        await conn.wait_parked()
        conn.reactor.advance(10)
        assert await conn.wait_closed() == b""
