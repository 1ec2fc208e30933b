"""An async Server-Sent Events client on anyio and h11, with browser-style reconnection.

- ``connect(url, ...)``: one response, no reconnection (``async with connect(url) as r``).
- ``EventSource(url, ...)``: reconnects like a browser's ``EventSource``, sending
  ``Last-Event-ID`` (``async with EventSource(url) as events: async for event in events``).
- A ``hook(t, record)`` on either sees every byte sent and read and the chunked framing as
  ``WireRecord`` values (``Sent``, ``Received``, ``ChunkHeader``, ``ChunkData``, ``BodyData``,
  ``BodyEnd``); ``rawsse trace`` is built on it.

Errors are ``SSEError`` subclasses, named for what went wrong.
"""

from rawsse.client._errors import (
    SSEConnectionError,
    SSEContentTypeError,
    SSEError,
    SSEProtocolError,
    SSEStatusError,
    SSETimeoutError,
)
from rawsse.client._eventsource import EventSource, SSEResponse, connect
from rawsse.client._wire import (
    BodyData,
    BodyEnd,
    ChunkData,
    ChunkHeader,
    Received,
    Sent,
    WireHook,
    WireRecord,
)

__all__ = [
    "BodyData",
    "BodyEnd",
    "ChunkData",
    "ChunkHeader",
    "EventSource",
    "Received",
    "SSEConnectionError",
    "SSEContentTypeError",
    "SSEError",
    "SSEProtocolError",
    "SSEResponse",
    "SSEStatusError",
    "SSETimeoutError",
    "Sent",
    "WireHook",
    "WireRecord",
    "connect",
]
