"""A streaming proxy: forward /v1/chat/completions to any OpenAI-compatible upstream.

Run:  RAWSSE_UPSTREAM=http://127.0.0.1:8001 rawsse serve examples.chat_proxy:app
      (the upstream can be vLLM, llama.cpp's server, or `rawsse serve --port 8001`)

The stream passes through event by event, through rawsse's own client. Backpressure holds end to
end: when the downstream client reads slowly, ``send_raw`` waits, the proxy stops reading the
upstream, and the upstream's socket fills. When the downstream client leaves, the producer is
cancelled, leaving the ``connect`` block closes the upstream connection, and the upstream stops
generating. An upstream that cannot be reached is a 502 (504 when it times out) in OpenAI's error
shape, so the client's SDK raises an ``APIStatusError`` that says what happened.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import anyio

from rawsse import App, EventStream, JSONResponse, Request, Response, encode_json_data
from rawsse.client import SSEConnectionError, SSEError, SSETimeoutError, connect
from rawsse.jsonio import loads

UPSTREAM = os.environ.get("RAWSSE_UPSTREAM", "http://127.0.0.1:8001").rstrip("/")
# Headers passed on to the upstream (the key, the content type); everything else stays here.
_FORWARDED = ("authorization", "content-type", "openai-organization")
_MAX_ERROR_BODY = 1024 * 1024

app = App()


def unreachable(exc: SSEConnectionError) -> Response:
    """The upstream could not be reached: 502 (504 on a timeout), in OpenAI's error shape."""
    status = 504 if isinstance(exc, SSETimeoutError) else 502
    error = {
        "message": f"The upstream {UPSTREAM} could not be reached: {exc}",
        "type": "server_error",
        "param": None,
        "code": "upstream_unreachable",
    }
    return JSONResponse({"error": error}, status)


@app.post("/v1/chat/completions")
async def completions(request: Request) -> Response | EventStream:
    """Forward one chat completion, streaming or not."""
    try:
        return await forward(request)
    except SSEConnectionError as exc:
        return unreachable(exc)


async def forward(request: Request) -> Response | EventStream:
    """Send the request upstream; relay the answer (raises ``SSEConnectionError``)."""
    headers = [(name, request.headers[name]) for name in _FORWARDED if name in request.headers]
    try:
        wants_stream = bool(loads(request.body).get("stream"))
    except (ValueError, AttributeError):
        wants_stream = False  # let the upstream answer the bad body with its own error
    url = f"{UPSTREAM}/v1/chat/completions"
    if not wants_stream:
        async with connect(url, body=request.body, headers=headers, check=False) as upstream:
            body = await upstream.read_body(_MAX_ERROR_BODY)
            content_type = upstream.head.header("content-type") or "application/json"
            return Response(body, upstream.status, content_type=content_type)

    # Open the upstream stream before answering, so its errors keep their real status.
    opened = connect(url, body=request.body, headers=headers, check=False)
    upstream = await opened.__aenter__()
    if upstream.status != 200:
        try:
            body = await upstream.read_body(_MAX_ERROR_BODY)
            content_type = upstream.head.header("content-type") or "application/json"
            return Response(body, upstream.status, content_type=content_type)
        finally:
            await opened.__aexit__(None, None, None)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for event in upstream:
                yield event.encode()
        except SSEError as exc:
            # The upstream broke mid-stream: say so in OpenAI's in-band error shape.
            yield encode_json_data(
                {"error": {"message": f"upstream: {exc}", "type": "upstream_error"}}
            )
            yield b"data: [DONE]\n\n"
        finally:
            # Runs when the stream ends, fails, or the client leaves (the source is closed).
            with anyio.CancelScope(shield=True):
                await opened.__aexit__(None, None, None)

    return EventStream(relay())
