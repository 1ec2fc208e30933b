"""The HTTP/1.1 driver over real sockets: keep-alive, pipelining, limits, every error status."""

from __future__ import annotations

import time

import anyio
import pytest

from rawsse._errors import HTTPError
from rawsse.app import App
from rawsse.request import Request
from rawsse.response import JSONResponse, Response, StreamingResponse
from tests.support import (
    RawClient,
    assert_still_serving,
    blocking_socket,
    get,
    parse_responses,
    request,
    reset_close,
)

pytestmark = pytest.mark.anyio


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
                    await anyio.sleep(0.15)
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
            await anyio.sleep(0.1)  # the server is parked on the first read by now
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
        # Mid-response: a slow handler whose client leaves is cancelled.
        sock = blocking_socket(server.port)
        sock.sendall(get("/slow"))
        await anyio.sleep(0.2)
        sock.close()
        with anyio.fail_after(3):
            while "slow_finished" not in events:
                await anyio.sleep(0.02)
        # Mid-stream: the source is closed.
        sock = blocking_socket(server.port)
        sock.sendall(get("/stream?n=1000&delay=0.01"))
        await anyio.sleep(0.1)
        reset_close(sock)
        with anyio.fail_after(3):
            while "closed" not in events:
                await anyio.sleep(0.02)
        await assert_still_serving(server.port)
        with anyio.fail_after(3):
            while server.stats.connections_active:
                await anyio.sleep(0.02)


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
        with anyio.fail_after(3):
            while server.stats.connections_active:
                await anyio.sleep(0.02)
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
