"""Redirects and request headers, as a browser's EventSource does them.

Against a scripted server (``raw_server``: every byte written by hand) and against rawsse's own
(``client_support.client_app``), on asyncio and trio.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.abc
import pytest

from rawsse.client import (
    EventSource,
    Opened,
    Sent,
    SSERedirectError,
    SSEStatusError,
    WireRecord,
    connect,
)
from rawsse.sse import Event
from tests.client.client_support import kinds
from tests.tools_support import LAST_CHUNK, RawRequest, chunk, plain_response, raw_server, sse_head

pytestmark = pytest.mark.anyio

REASONS = {
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
}


def redirect(status: int, location: str) -> bytes:
    """A redirect response with an empty body, written by hand."""
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Redirect')}\r\nLocation: {location}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()


def echo(request: RawRequest) -> bytes:
    """A stream of one event saying what the request was."""
    seen = {"method": request.method, "path": request.path, "body": request.body.decode()}
    seen["headers"] = request.headers  # type: ignore[assignment]
    return sse_head() + chunk(b"data: " + json.dumps(seen).encode() + b"\n\n") + LAST_CHUNK


async def _first_data(url: str, **options: Any) -> dict[str, Any]:
    async with connect(url, **options) as response:
        event = await response.next_event()
    assert event is not None
    value: dict[str, Any] = json.loads(event.data)
    return value


# ---------------------------------------------------------------- the request headers


async def test_browser_request_headers_scripted() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(echo(request))

    async with raw_server(handler) as server:
        await _first_data(server.url())
        await _first_data(server.url(), headers={"Cache-Control": "max-age=0", "X-A": "b"})
    default, custom = server.requests
    assert default.method == "GET"
    assert default.headers["accept"] == "text/event-stream"
    assert default.headers["cache-control"] == "no-cache"
    assert default.headers["pragma"] == "no-cache"
    assert "last-event-id" not in default.headers
    # a header the caller gives replaces the default of that name, once
    assert custom.headers["cache-control"] == "max-age=0"
    assert custom.headers["x-a"] == "b"


async def test_browser_request_headers_rawsse(app_url: str) -> None:
    seen = await _first_data(app_url + "/headers", last_event_id="41")
    headers = seen["headers"]
    assert headers["accept"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["pragma"] == "no-cache"
    assert headers["last-event-id"] == "41"


# ---------------------------------------------------------------- following redirects


async def test_a_redirect_chain_is_followed_with_the_same_request() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        chain = {
            "/events": (301, "/a"),
            "/a": (302, "b"),  # relative to /a
            "/b": (307, f"http://127.0.0.1:{server.port}/c?x=1#fragment"),
            "/c?x=1": (308, "/stream"),
        }
        if request.path in chain:
            await s.send(redirect(*chain[request.path]))
        else:
            await s.send(sse_head() + chunk(b"data: ok\n\n") + LAST_CHUNK)

    headers = {"Authorization": "Bearer k", "Cookie": "c=1"}
    async with (
        raw_server(handler) as server,
        connect(server.url(), last_event_id="7", headers=headers) as response,
    ):
        assert [event async for event in response] == [Event("ok")]
    assert response.url == server.url("/stream")
    assert [r.path for r in server.requests] == ["/events", "/a", "/b", "/c?x=1", "/stream"]
    for request in server.requests:
        # GET stays GET; same origin: the credentials go along; so does Last-Event-ID
        assert request.method == "GET"
        assert request.headers["authorization"] == "Bearer k"
        assert request.headers["cookie"] == "c=1"
        assert request.headers["last-event-id"] == "7"


# status, then what a POST with a JSON body becomes after it (fetch's rules)
METHOD_RULES = [
    (301, "GET", False),
    (302, "GET", False),
    (303, "GET", False),
    (307, "POST", True),
    (308, "POST", True),
]


@pytest.mark.parametrize(("status", "method", "keeps_body"), METHOD_RULES)
async def test_post_redirect_method_and_body_scripted(
    status: int, method: str, keeps_body: bool
) -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        if request.path == "/events":
            await s.send(redirect(status, "/next"))
        else:
            await s.send(echo(request))

    async with raw_server(handler) as server:
        seen = await _first_data(server.url(), json={"q": 1})
    first, second = server.requests
    assert (first.method, first.body) == ("POST", b'{"q":1}')
    assert seen["method"] == second.method == method
    if keeps_body:
        assert second.body == b'{"q":1}'
        assert second.headers["content-type"] == "application/json"
    else:
        assert second.body == b""
        assert "content-type" not in second.headers
        assert "content-length" not in second.headers


@pytest.mark.parametrize(("status", "method", "keeps_body"), METHOD_RULES)
async def test_post_redirect_method_and_body_rawsse(
    app_url: str, status: int, method: str, keeps_body: bool
) -> None:
    seen = await _first_data(f"{app_url}/redirect/{status}?to=/headers", json={"q": 1})
    assert seen["method"] == method
    assert seen["body"] == ('{"q":1}' if keeps_body else "")
    assert ("content-type" in seen["headers"]) is keeps_body


async def test_303_turns_any_method_but_head_into_get() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        if request.path == "/events":
            await s.send(redirect(303, "/next"))
        else:
            await s.send(echo(request))

    async with raw_server(handler) as server:
        await _first_data(server.url(), method="PUT", body=b"x")
    assert [(r.method, r.body) for r in server.requests] == [("PUT", b"x"), ("GET", b"")]


async def test_redirect_hops_are_bounded() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(redirect(302, "/events"))  # a loop

    async with raw_server(handler) as server:
        with pytest.raises(SSERedirectError, match="more than 3 redirects") as info:
            await _first_data(server.url(), max_redirects=3)
        assert len(server.requests) == 4  # the request and three redirects
        assert info.value.status == 302
        assert info.value.location == "/events"
        # fetch's bound by default; a reconnecting source fails at once, no retry
        with pytest.raises(SSERedirectError, match="more than 20 redirects"):
            async with EventSource(server.url(), retry_ms=1) as source:
                await source.__anext__()
        assert len(server.requests) == 4 + 21


async def test_redirect_hops_are_bounded_rawsse(app_url: str) -> None:
    loop = f"{app_url}/redirect/307?to=/redirect/307%3Fto%3D/headers"
    assert (await _first_data(loop, max_redirects=2))["path"] == "/headers"
    with pytest.raises(SSERedirectError, match="more than 1 redirects"):
        await _first_data(loop, max_redirects=1)


@pytest.mark.parametrize(
    "location",
    [
        "ftp://127.0.0.1/events",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:text/event-stream,data: x",
        "http://:80/no-host",
    ],
)
async def test_never_to_a_non_http_url(location: str) -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(redirect(307, location))

    async with raw_server(handler) as server:
        with pytest.raises(SSERedirectError, match="not an http") as info:
            await _first_data(server.url())
    assert info.value.location == location
    assert len(server.requests) == 1


async def test_never_to_a_non_http_url_rawsse(app_url: str) -> None:
    with pytest.raises(SSERedirectError, match="not an http"):
        await _first_data(f"{app_url}/redirect/302?to=ftp://127.0.0.1/x")


async def test_credentials_never_go_to_another_origin() -> None:
    async def other_origin(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(echo(request))

    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(redirect(307, other.url("/stream")))

    headers = {"Authorization": "Bearer secret", "Cookie": "s=1", "X-Trace": "t"}
    async with raw_server(other_origin) as other, raw_server(handler) as server:
        seen = await _first_data(server.url(), headers=headers)
    assert server.requests[0].headers["authorization"] == "Bearer secret"
    [request] = other.requests  # another port: another origin
    assert "authorization" not in request.headers
    assert "cookie" not in request.headers
    assert request.headers["x-trace"] == "t"
    assert request.headers["host"] == f"127.0.0.1:{other.port}"
    assert seen["path"] == "/stream"


async def test_credentials_never_go_to_another_origin_rawsse(app_url: str) -> None:
    async def other_origin(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(echo(request))

    auth = {"Authorization": "Bearer secret"}
    # rawsse to rawsse (same origin): kept
    same = await _first_data(f"{app_url}/redirect/302?to=/headers", headers=auth)
    assert same["headers"]["authorization"] == "Bearer secret"
    async with raw_server(other_origin) as other:
        # rawsse to a scripted server on another port: dropped
        await _first_data(f"{app_url}/redirect/302?to={other.url('/x')}", headers=auth)
        # and a scripted server to rawsse: dropped too
        seen = await _first_data(other.url("/y"), headers=auth)
    assert "authorization" not in other.requests[0].headers
    assert other.requests[1].headers["authorization"] == "Bearer secret"
    assert seen["path"] == "/y"


async def test_a_reconnection_starts_again_from_the_original_url() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        if request.path == "/moved":
            await s.send(sse_head() + chunk(b"retry: 10\nid: 1\ndata: a\n\n") + LAST_CHUNK)
        elif request.headers.get("last-event-id") == "1":
            await s.send(plain_response("204 No Content", "text/plain", b""))
        else:
            await s.send(redirect(307, "/moved"))

    async with raw_server(handler) as server, EventSource(server.url()) as source:
        with anyio.fail_after(10):
            records = [record async for record in source.records()]
    assert [r.path for r in server.requests] == ["/events", "/moved", "/events"]
    assert kinds(records) == ["Opened", "Event", "ConnectionLost"]
    opened = records[0]
    assert isinstance(opened, Opened)
    assert opened.url == server.url("/moved")
    assert source.url == server.url()


async def test_a_reconnection_starts_again_from_the_original_url_rawsse(app_url: str) -> None:
    sent: list[bytes] = []

    def hook(t: float, record: WireRecord) -> None:
        if isinstance(record, Sent):
            sent.append(record.data.split(b" HTTP/1.1")[0])

    async with EventSource(f"{app_url}/redirect/307?to=/ticks", hook=hook) as source:
        with anyio.fail_after(10):
            records = [record async for record in source.records()]
    assert [r for r in records if isinstance(r, Event)] == [Event("a", id="1"), Event("b", id="2")]
    assert sent == [b"GET /redirect/307?to=/ticks", b"GET /ticks"] * 3
    opened = [r for r in records if isinstance(r, Opened)]
    assert [(o.url, o.reconnects, o.last_event_id) for o in opened] == [
        (app_url + "/ticks", 0, ""),
        (app_url + "/ticks", 1, "1"),
    ]


async def test_a_redirect_without_location_is_a_status_error() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(plain_response("301 Moved Permanently", "text/plain", b"gone"))

    async with raw_server(handler) as server:
        with pytest.raises(SSEStatusError, match="301") as info:
            await _first_data(server.url())
    assert not isinstance(info.value, SSERedirectError)
    assert info.value.body_excerpt == b"gone"


async def test_unchecked_connect_returns_the_redirect_itself() -> None:
    # check=False (the wire inspector): any answer is the answer, a redirect included
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(redirect(302, "/elsewhere"))

    async with raw_server(handler) as server, connect(server.url(), check=False) as response:
        assert response.status == 302
        assert response.head.header("location") == "/elsewhere"
    assert len(server.requests) == 1
