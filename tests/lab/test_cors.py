"""CORS: an allowed origin may read rawsse's own response headers.

Without ``Access-Control-Expose-Headers`` a browser hides every response header but the
safelisted few from a cross-origin page, so ``x-rawsse-stream-id`` (the key for resuming),
``x-rawsse-resume-token``, ``x-rawsse-replay-from`` and ``x-rawsse-replay-gap`` read as null.
Raw HTTP here on asyncio and trio; a real Chromium reads them cross-origin in
``test_lab_browser.py``.
"""

from __future__ import annotations

import pytest

from rawsse.cli._demo_app import DemoOptions, create_demo_app
from tests.chat_support import (
    KEY,
    ChatServer,
    bearer,
    get,
    in_thread,
    openai_body,
    post,
    request,
)
from tests.support import running_server

pytestmark = pytest.mark.anyio

ORIGIN = "http://page.example"
COMPLETIONS = "/v1/chat/completions"


def exposed(headers: object) -> set[str]:
    value = headers.get("access-control-expose-headers", "")  # type: ignore[attr-defined]
    return {name.strip() for name in value.split(",") if name.strip()}


async def test_an_allowed_origin_may_read_the_stream_headers(anyio_backend: str) -> None:
    app = create_demo_app(DemoOptions(api_keys=(KEY,), cors_origins=(ORIGIN,)))
    async with running_server(app) as server:
        srv = ChatServer(server)
        try:
            stream = await post(srv, COMPLETIONS, openai_body(), {**bearer(), "origin": ORIGIN})
            stream_id = stream.headers["x-rawsse-stream-id"]
            resumed = await get(
                srv,
                f"{COMPLETIONS}/{stream_id}/events",
                {**bearer(), "origin": ORIGIN, "last-event-id": "1"},
            )
            other = await post(srv, COMPLETIONS, openai_body(), {**bearer(), "origin": "http://x"})
            preflight = await preflight_status(srv)
        finally:
            await in_thread(srv.close_clients)
    assert stream.headers["access-control-allow-origin"] == ORIGIN
    assert {"x-rawsse-stream-id", "x-rawsse-resume-token"} <= exposed(stream.headers)
    assert {"x-rawsse-stream-id", "x-rawsse-replay-from", "x-rawsse-replay-gap"} <= exposed(
        resumed.headers
    )
    # Safelisted names need no exposing; nothing about CORS for an origin not allowed.
    assert "content-type" not in exposed(stream.headers)
    assert "access-control-allow-origin" not in other.headers
    assert not exposed(other.headers)
    assert preflight == 204


async def preflight_status(srv: ChatServer) -> int:
    answer = await request(
        srv,
        "OPTIONS",
        COMPLETIONS,
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert not exposed(answer.headers)
    return answer.status
