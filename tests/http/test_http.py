"""The HTTP/1.1 driver over real sockets: keep-alive, pipelining, limits, every error status."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from rawsse._errors import HTTPError
from rawsse.app import App
from rawsse.request import Request
from rawsse.response import JSONResponse, Response, StreamingResponse
from rawsse.server import Server
from tests.support import (
    RawClient,
    assert_still_serving,
    blocking_socket,
    get,
    parse_responses,
    recv_some,
    request,
    reset_close,
    wait_for,
)

pytestmark = pytest.mark.anyio


async def wait_parked(server: Server, count: int = 1) -> None:
    """Wait until ``count`` connections wait for input with a deadline in the shared timer."""
    await wait_for(
        lambda: sum(c._read_deadline is not None for c in server.context.connections) >= count,
        what=f"{count} connection(s) waiting for input",
    )


def make_app(events: dict[str, object] | None = None) -> App:
    events = events if events is not None else {}
    app = App()

    @app.get("/ping")
    async def ping(req: Request) -> Response:
        return Response("pong")

    @app.post("/echo")
    async def echo(req: Request) -> Response:
        return JSONResponse({"got": req.json(), "len": len(req.body)})

    @app.post("/raw")
    async def raw(req: Request) -> Response:
        return Response(req.body, content_type="application/octet-stream")

    @app.get("/items/{item_id}/detail")
    async def item(req: Request) -> Response:
        return JSONResponse({"id": req.path_params["item_id"], "q": req.query})

    @app.get("/stream")
    async def stream(req: Request) -> StreamingResponse:
        count = int(req.query.get("n", "3"))
        delay = float(req.query.get("delay", "0"))

        async def pieces():
            events["stream_started"] = True
            try:
                for i in range(count):
                    yield b"piece %d\n" % i
                    if delay:
                        await anyio.sleep(delay)
            finally:
                events["closed"] = True

        return StreamingResponse(pieces(), content_type="text/plain")

    @app.get("/slow")
    async def slow(req: Request) -> Response:
        events["slow_started"] = True
        try:
            await anyio.sleep(30)
        finally:
            events["slow_finished"] = True
        return Response("late")

    @app.get("/teapot")
    async def teapot(req: Request) -> Response:
        raise HTTPError(418, "short and stout")

    @app.get("/boom")
    async def boom(req: Request) -> Response:
        raise RuntimeError("handler bug")

    return app


async def test_get_and_keepalive_reuse() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server, RawClient.connect(server.port) as client:
        await client.send(get("/ping", close=False))
        await client.read_until(b"pong")
        await client.send(get("/ping", close=False))
        with anyio.fail_after(5):
            while client.received.count(b"pong") < 2:
                client.received += await client.stream.receive()
        responses = parse_responses(client.received)
        assert [r.status for r in responses] == [200, 200]
        assert responses[0].header("content-length") == "4"
        assert responses[0].reason == "OK"


async def test_three_pipelined_requests_answered_in_order() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        raw = (
            get("/items/1/detail?a=1", close=False)
            + get("/items/2/detail?a=2", close=False)
            + get("/items/3/detail?a=3")
        )
        responses = await request(server.port, raw)
        assert [r.status for r in responses] == [200, 200, 200]
        assert [r.body for r in responses] == [
            b'{"id":"1","q":{"a":"1"}}',
            b'{"id":"2","q":{"a":"2"}}',
            b'{"id":"3","q":{"a":"3"}}',
        ]


async def test_http10_streaming_is_close_delimited() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        responses = await request(server.port, b"GET /stream?n=3 HTTP/1.0\r\n\r\n")
        assert len(responses) == 1
        response = responses[0]
        assert response.status == 200
        assert response.header("transfer-encoding") is None
        assert response.body == b"piece 0\npiece 1\npiece 2\n"
        await assert_still_serving(server.port)


async def test_chunked_streaming_body() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        [response] = await request(server.port, get("/stream?n=3&delay=0.01"))
        assert response.header("transfer-encoding") == "chunked"
        assert response.body == b"piece 0\npiece 1\npiece 2\n"
        # Paced pieces go out one chunk each (nothing to coalesce).
        assert len(response.chunks) == 3


async def test_expect_100_continue() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server, RawClient.connect(server.port) as client:
        await client.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        await client.read_until(b"100 Continue\r\n\r\n")
        await client.send(b'{"a":1}')
        responses = parse_responses(await client.read_until_close())
        assert [r.status for r in responses] == [100, 200]
        assert responses[1].body == b'{"got":{"a":1},"len":7}'


async def test_head_sends_headers_only() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        data = b""
        async with RawClient.connect(server.port) as client:
            await client.send(b"HEAD /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = await client.read_until_close()
        [response] = parse_responses(data, head_only=True)
        assert response.status == 200
        assert response.header("content-length") == "4"
        assert data.endswith(b"\r\n\r\n")


async def test_not_found_and_method_not_allowed() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        [missing] = await request(server.port, get("/nope"))
        assert missing.status == 404
        [wrong] = await request(
            server.port, b"DELETE /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert wrong.status == 405
        assert wrong.header("allow") == "GET, HEAD"


async def test_handler_errors() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        [teapot] = await request(server.port, get("/teapot"))
        assert (teapot.status, teapot.body) == (418, b"short and stout")
        [boom] = await request(server.port, get("/boom"))
        assert boom.status == 500
        assert b"handler bug" not in boom.body  # no internals leak to the client
        await assert_still_serving(server.port)


async def test_bad_json_is_400() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        raw = (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope"
        )
        [response] = await request(server.port, raw)
        assert response.status == 400
        assert b"not valid JSON" in response.body


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x00\x01\x02garbage\xff\r\n\r\n", id="binary-garbage"),
        pytest.param(
            bytes.fromhex("16030100f4010000f00303") + b"\x00" * 40 + b"\r\n\r\n", id="tls-hello"
        ),
        pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", id="header-no-colon"),
        pytest.param(
            b"GET /ping HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", id="bad-length"
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="length-and-chunked",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            id="two-lengths",
        ),
        pytest.param(
            b"POST /raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(b"GET /ping HTTP/1.1\r\n\r\n", id="no-host"),
    ],
)
async def test_malformed_requests_get_400_and_close(raw: bytes) -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        responses = await request(server.port, raw)
        assert [r.status for r in responses] == [400]
        assert responses[0].header("connection") == "close"
        await assert_still_serving(server.port)


async def test_header_section_too_large_is_431() -> None:
    from tests.support import running_server

    async with running_server(make_app(), max_header_bytes=4096) as server:
        raw = get("/ping", extra="X-Big: " + "a" * 8000 + "\r\n")
        [response] = await request(server.port, raw)
        assert response.status == 431
        await assert_still_serving(server.port)


async def test_too_many_headers_is_431() -> None:
    from tests.support import running_server

    async with running_server(make_app(), max_headers=10) as server:
        extra = "".join(f"X-H{i}: v\r\n" for i in range(20))
        [response] = await request(server.port, get("/ping", extra=extra))
        assert response.status == 431
        await assert_still_serving(server.port)


async def test_body_too_large_by_content_length_is_413_without_reading() -> None:
    from tests.support import running_server

    async with running_server(make_app(), max_body_bytes=1000) as server:
        raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
        [response] = await request(server.port, raw)  # body never sent: decided from the header
        assert response.status == 413
        await assert_still_serving(server.port)


async def test_chunked_body_too_large_is_413() -> None:
    from tests.support import running_server

    async with running_server(make_app(), max_body_bytes=1000) as server:
        chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"
        raw = b"POST /raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3
        [response] = await request(server.port, raw + b"0\r\n\r\n")
        assert response.status == 413
        await assert_still_serving(server.port)


async def test_chunked_request_body_is_read() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        raw = (
            b"POST /raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
        )
        [response] = await request(server.port, raw)
        assert (response.status, response.body) == (200, b"abcde")


async def test_slowloris_gets_408_then_close() -> None:
    from tests.support import running_server

    async with running_server(make_app(), header_timeout_s=0.5) as server:
        async with RawClient.connect(server.port) as client:
            await client.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n")
            with anyio.fail_after(3):
                for _ in range(5):  # a header line now and then, never the end
                    await anyio.sleep(0.15)  # the client's pace: the fault under test
                    try:
                        await client.send(b"X-Slow: 1\r\n")
                    except (anyio.BrokenResourceError, ConnectionError):
                        break
                data = await client.read_until_close()
        [response] = parse_responses(data)
        assert response.status == 408
        await assert_still_serving(server.port)


async def test_idle_keepalive_connection_is_closed() -> None:
    from tests.support import running_server

    async with running_server(make_app(), keepalive_timeout_s=0.3) as server:
        async with RawClient.connect(server.port) as client:
            await client.send(get("/ping", close=False))
            data = await client.read_until_close(timeout=3)
        assert [r.status for r in parse_responses(data)] == [200]


async def test_pipelined_requests_with_empty_and_real_bodies() -> None:
    """Bodiless requests skip h11's end-of-message step: what follows them must still be
    parsed from the right byte, whatever framing the next one uses."""
    from tests.support import running_server

    async with running_server(make_app()) as server:
        raw = (
            b"POST /raw HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
            + get("/ping", close=False)
            + b"POST /raw HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
            + b"POST /raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"2\r\nde\r\n0\r\n\r\n"
            + b"POST /raw HTTP/1.0\r\nHost: t\r\n\r\n"
        )
        responses = await request(server.port, raw)
        assert [(r.status, r.body) for r in responses] == [
            (200, b""),
            (200, b"pong"),
            (200, b"abc"),
            (200, b"de"),
            (200, b""),
        ]


async def test_idle_timeout_holds_after_a_longer_first_wait() -> None:
    """The first wait (header timeout, 5 s) leaves a later timer entry behind; the idle wait
    after the response must still end at the keep-alive timeout, not at that entry."""
    from tests.support import running_server

    async with running_server(make_app(), header_timeout_s=5, keepalive_timeout_s=0.3) as server:
        async with RawClient.connect(server.port) as client:
            await wait_parked(server)  # on the first read, with the header timeout's deadline
            await client.send(get("/ping", close=False))
            started = time.monotonic()
            data = await client.read_until_close(timeout=3)
            waited = time.monotonic() - started
        assert [r.status for r in parse_responses(data)] == [200]
        assert waited < 2.0


async def test_slowloris_on_a_keepalive_connection_gets_408() -> None:
    from tests.support import running_server

    async with running_server(make_app(), header_timeout_s=0.5) as server:
        async with RawClient.connect(server.port) as client:
            await client.send(get("/ping", close=False))
            await client.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n")  # never finished
            data = await client.read_until_close(timeout=3)
        assert [r.status for r in parse_responses(data)] == [200, 408]
        await assert_still_serving(server.port)


async def test_slow_body_gets_408() -> None:
    from tests.support import running_server

    async with running_server(make_app(), body_timeout_s=0.4) as server:
        async with RawClient.connect(server.port) as client:
            await client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            data = await client.read_until_close(timeout=3)
        [response] = parse_responses(data)
        assert response.status == 408
        await assert_still_serving(server.port)


async def test_client_closing_mid_request_and_mid_response() -> None:
    from tests.support import running_server

    events: dict[str, object] = {}
    async with running_server(make_app(events)) as server:
        # Mid-request: half a header section, then FIN; and then RST.
        sock = blocking_socket(server.port)
        sock.sendall(b"GET /ping HTTP/1.1\r\nHo")
        sock.close()
        sock = blocking_socket(server.port)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
        reset_close(sock)
        # Mid-response: a slow handler whose client resets is cancelled.
        sock = blocking_socket(server.port)
        sock.sendall(get("/slow"))
        await wait_for(lambda: "slow_started" in events)
        reset_close(sock)
        await wait_for(lambda: "slow_finished" in events)
        # Mid-stream: the source is closed.
        sock = blocking_socket(server.port)
        sock.sendall(get("/stream?n=1000&delay=0.01"))
        await wait_for(lambda: "stream_started" in events)
        reset_close(sock)
        await wait_for(lambda: "closed" in events)
        await assert_still_serving(server.port)
        await wait_for(lambda: server.stats.connections_active == 0)


async def test_connection_limit_gives_503_and_recovers() -> None:
    from tests.support import running_server

    async with running_server(make_app(), max_connections=2) as server:
        async with RawClient.connect(server.port) as a, RawClient.connect(server.port) as b:
            await a.send(get("/ping", close=False))
            await b.send(get("/ping", close=False))
            await a.read_until(b"pong")
            await b.read_until(b"pong")
            [refused] = await request(server.port, get("/ping"))
            assert refused.status == 503
            assert refused.header("retry-after") == "1"
        await wait_for(lambda: server.stats.connections_active == 0)
        await assert_still_serving(server.port)


async def test_graceful_shutdown_ends_stream_with_terminator() -> None:
    from tests.support import running_server

    async with running_server(make_app(), shutdown_grace_s=2) as server:
        async with RawClient.connect(server.port) as client:
            await client.send(get("/stream?n=100000&delay=0.01"))
            await client.read_until(b"piece 3")
            server.shutdown()
            data = await client.read_until_close()
        # The plain StreamingResponse has no shutdown hook: it finishes within the grace
        # period or is cut; either way the body seen so far parses to whole chunks.
        assert data.startswith(b"HTTP/1.1 200 OK")


async def test_query_and_path_params_decoded() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        [response] = await request(server.port, get("/items/a%20b/detail?x=%C3%A9&x=2&y"))
        assert response.body == '{"id":"a b","q":{"x":"é","y":""}}'.encode()


async def test_keepalive_after_streaming_responses() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server, RawClient.connect(server.port) as client:
        for _ in range(3):
            client.received = b""
            await client.send(get("/stream?n=2", close=False))
            await client.read_until(b"\r\n0\r\n\r\n")
            [response] = parse_responses(client.received)
            assert response.body == b"piece 0\npiece 1\n"
        # A request pipelined behind a stream is answered after it.
        client.received = b""
        await client.send(get("/stream?n=2&delay=0.01", close=False) + get("/ping"))
        responses = parse_responses(await client.read_until_close())
        assert [r.status for r in responses] == [200, 200]
        assert responses[1].body == b"pong"


async def test_tcp_keepalive_options_are_applied() -> None:
    import socket as socket_module

    from tests.support import running_server

    seen: dict[str, int] = {}
    app = make_app()

    @app.get("/sockopts")
    async def sockopts(req: Request) -> Response:
        return Response("ok")

    async with running_server(app, tcp_keepalive_s=30, tcp_user_timeout_s=20) as server:
        async with RawClient.connect(server.port) as client:
            await client.send(get("/ping", close=False))
            await client.read_until(b"pong")
            [connection] = list(server.context.connections)
            sock = connection.sock
            seen["keepalive"] = sock.getsockopt(
                socket_module.SOL_SOCKET, socket_module.SO_KEEPALIVE
            )
            seen["idle"] = sock.getsockopt(socket_module.IPPROTO_TCP, socket_module.TCP_KEEPIDLE)
            seen["user_timeout"] = sock.getsockopt(
                socket_module.IPPROTO_TCP, socket_module.TCP_USER_TIMEOUT
            )
    assert seen == {"keepalive": 1, "idle": 30, "user_timeout": 20000}


async def test_route_renders_server_decided_errors_in_its_own_shape() -> None:
    from tests.support import running_server

    app = make_app()

    async def upload(req: Request) -> Response:
        return Response("stored")

    app.add_route(
        "/upload",
        upload,
        ("POST",),
        error_renderer=lambda status, detail: JSONResponse({"error": {"status": status}}, status),
    )
    async with running_server(app, max_body_bytes=10) as server:
        raw = b"POST /upload?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n"
        [response] = await request(server.port, raw)
        assert response.status == 413
        assert response.header("content-type") == "application/json"
        assert response.body == b'{"error":{"status":413}}'
        # Other routes keep the plain-text answer.
        raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n"
        [response] = await request(server.port, raw)
        assert response.status == 413
        assert response.header("content-type") == "text/plain; charset=utf-8"
        await assert_still_serving(server.port)


async def test_access_log_names_each_request(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from rawsse.server import Server
    from tests.support import running_server

    caplog.set_level(logging.INFO, logger="rawsse.access")
    app = make_app()
    async with running_server(app) as server:
        server.context.access_log = True
        assert isinstance(server, Server)
        await request(server.port, get("/ping", extra="X-Request-ID: abc-123\r\n"))
        await request(server.port, get("/ping", extra="X-Request-ID: <bad id>\r\n"))
        await request(server.port, get("/ping?key=SECRET"))
    lines = [r.getMessage() for r in caplog.records if r.name == "rawsse.access"]
    assert len(lines) == 3
    assert lines[0].endswith("rid=abc-123")
    assert "<bad id>" not in lines[1]
    rids = [line.rsplit("rid=", 1)[1] for line in lines[1:]]
    assert rids[0] != rids[1] and all(rids)
    assert "SECRET" not in lines[2]


# --- HTTP/1.1 rules found missing by hostile-input testing (RFC 9112 / 9110) ------------------


async def test_absolute_form_target_is_accepted() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        raw = b"GET http://127.0.0.1/items/7/detail?a=1 HTTP/1.1\r\nHost: t\r\n\r\n"
        [response, _] = await request(server.port, raw + get("/ping"))
        assert (response.status, response.body) == (200, b'{"id":"7","q":{"a":"1"}}')


@pytest.mark.parametrize("host", [b"a/b@c", b"a b", b"x:notaport", b"[::1"])
async def test_invalid_host_is_400(host: bytes) -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        responses = await request(server.port, b"GET /ping HTTP/1.1\r\nHost: %b\r\n\r\n" % host)
        assert [r.status for r in responses] == [400]
        await assert_still_serving(server.port)


async def test_one_leading_empty_line_is_ignored() -> None:
    from tests.support import running_server

    async with running_server(make_app()) as server:
        raw = b"\r\nPOST /raw HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab\r\n" + get("/ping")
        responses = await request(server.port, raw)
        assert [(r.status, r.body) for r in responses] == [(200, b"ab"), (200, b"pong")]


async def test_connection_limit_holds_against_a_burst() -> None:
    """Connections are counted as they are accepted: a burst queued in the backlog (more
    than one accept batch) cannot get past the limit before their tasks start."""
    import socket

    from tests.support import running_server

    limit, burst = 100, 300
    async with running_server(make_app(), max_connections=limit) as server:
        socks = []
        try:
            for _ in range(burst):  # all queued before the server accepts any
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", server.port))
                socks.append(sock)
            stats = server.stats
            await wait_for(
                lambda: stats.connections_total + stats.requests_by_status.get(503, 0) >= burst,
                what="every connection accepted",
            )
            assert stats.connections_active == limit
            statuses: dict[int, int] = {}
            for sock in socks:
                sock.send(get("/ping"))
                data = b""
                while chunk := await recv_some(sock):
                    data += chunk
                [response] = parse_responses(data)
                statuses[response.status] = statuses.get(response.status, 0) + 1
            assert statuses == {200: limit, 503: burst - limit}
        finally:
            for sock in socks:
                sock.close()


@pytest.mark.parametrize("line_bytes", [8 * 1024, 50 * 1024])
async def test_request_line_counts_against_the_header_limit(
    line_bytes: int, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from tests.support import running_server

    caplog.set_level(logging.INFO, logger="rawsse.access")
    async with running_server(make_app(), max_header_bytes=4096) as server:
        server.context.access_log = True
        target = "/ping?" + "a" * line_bytes
        [response] = await request(server.port, get(target))
        # RFC 9112 3: a target longer than the server wishes to parse "MUST" get 414.
        assert response.status == 414
        await assert_still_serving(server.port)
    assert all(len(r.getMessage()) < 4096 for r in caplog.records)


async def test_chunk_extension_padding_counts_against_the_body_limit() -> None:
    from tests.support import running_server

    async with running_server(make_app(), max_body_bytes=16 * 1024) as server:
        chunk = b"1;pad=" + b"x" * 4000 + b"\r\na\r\n"
        raw = b"POST /raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        [response] = await request(server.port, raw + chunk * 8 + b"0\r\n\r\n")
        assert response.status == 413
        await assert_still_serving(server.port)


async def test_impossible_chunk_size_is_refused_at_once() -> None:
    from tests.support import running_server

    async with running_server(make_app(), body_timeout_s=60) as server:
        raw = (
            b"POST /raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"10000000000000000\r\nabc"
        )
        # Answered within the I/O timeout (5 s), not after the body timeout (60 s).
        async with RawClient.connect(server.port) as client:
            await client.send(raw)
            [response] = parse_responses(await client.read_until(b"\r\n\r\n"))
        assert response.status == 400


def _access_log_app() -> App:
    app = make_app()

    @app.get("/bad/{anything}")
    async def bad_header(req: Request) -> Response:
        return Response("x", headers=[("x-bad", "a\nb")])

    @app.get("/broken/{anything}")
    async def broken_stream(req: Request) -> StreamingResponse:
        async def pieces():
            yield b"first\n"
            raise RuntimeError("source failed")

        return StreamingResponse(pieces())

    return app


async def test_logged_targets_are_redacted_and_escaped(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from tests.support import running_server

    caplog.set_level(logging.INFO, logger="rawsse")
    async with running_server(_access_log_app()) as server:
        server.context.access_log = True
        for target in (
            b"/ping?%6Bey=SECRET1",  # decoded, these names are the ones the key is read from
            b"/ping?ke%79=SECRET2",
            b"/ping?a=1&KEY=SECRET3",
            b"/ping?x=1;api%5Fkey=SECRET4",
            b'/ping?q="forged',
            b"/bad/x%0d%0aFORGED%20LINE",
            b"/broken/y%0d%0aFORGED%20LINE",
        ):
            raw = b"GET %b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % target
            await request(server.port, raw)
        await wait_for(lambda: server.stats.connections_active == 0)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "[redacted]" in m]) == 4
    text = "\n".join(messages)
    assert "SECRET" not in text
    for message in messages:
        assert message.isprintable(), repr(message)  # no CR, LF or other control character
    access = [r.getMessage() for r in caplog.records if r.name == "rawsse.access"]
    # The target field cannot end the quoted request field early.
    assert all(m.count('"') == 2 for m in access), access
    errors = [m for m in messages if "cannot send" in m or "streaming body failed" in m]
    assert len(errors) == 2 and all("FORGED" in m for m in errors)


async def test_request_followed_by_fin_is_answered() -> None:
    """Deterministic: however the FIN and the request arrive (with the connection waiting,
    or before it read anything), a request read whole gets its answer; then the
    connection closes."""
    import socket

    from tests.support import running_server

    app = make_app()

    @app.get("/yielding")
    async def yielding(req: Request) -> Response:
        await anyio.lowlevel.checkpoint()  # gives a FIN report time to arrive
        return Response("yielded")

    async with running_server(app) as server:
        for path, body in (("/ping", b"pong"), ("/yielding", b"yielded")):
            for parked in (False, True):
                sock = blocking_socket(server.port)
                try:
                    if parked:  # the request and the FIN arrive together, reported as one
                        await wait_parked(server)
                    sock.sendall(get(path, close=False))
                    sock.shutdown(socket.SHUT_WR)
                    data = b""
                    while chunk := await recv_some(sock):
                        data += chunk
                finally:
                    sock.close()
                assert [(r.status, r.body) for r in parse_responses(data)] == [(200, body)]
            await wait_for(lambda: server.stats.connections_active == 0)


async def test_stream_requested_with_fin_is_not_started() -> None:
    import socket

    from tests.support import running_server

    events: dict[str, object] = {}
    async with running_server(make_app(events)) as server:
        sock = blocking_socket(server.port)
        try:
            sock.sendall(get("/stream?n=3", close=False))
            sock.shutdown(socket.SHUT_WR)
            assert await recv_some(sock) == b""
        finally:
            sock.close()
        await wait_for(lambda: server.stats.connections_active == 0)
    assert "stream_started" not in events
