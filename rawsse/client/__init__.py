"""An async Server-Sent Events client on anyio and h11, with browser-style reconnection.

- ``connect(url, ...)``: one response, no reconnection (``async with connect(url) as r``).
- ``EventSource(url, ...)``: reconnects like a browser's ``EventSource``, sending
  ``Last-Event-ID`` (``async with EventSource(url) as events: async for event in events``);
  ``records()`` also gives comments (``Comment``), skipped oversized events (``EventSkipped``)
  and the connection's states (``Opened``, ``ConnectionLost``, ``GaveUp``), which ``on_state``
  receives too; ``restart()`` reconnects at once.
- Both follow redirects the way browsers do and send a browser's request headers.
- A ``hook(t, record)`` on either sees every byte sent and read and the chunked framing as
  ``WireRecord`` values (``Sent``, ``Received``, ``ChunkHeader``, ``ChunkData``, ``BodyData``,
  ``BodyEnd``); ``rawsse trace`` is built on it.

Errors are ``SSEError`` subclasses, named for what went wrong. docs/client.md says what the
client does like a browser and where it differs.
"""

from rawsse.client._errors import (
    SSEConnectionError,
    SSEContentTypeError,
    SSEError,
    SSEProtocolError,
    SSERedirectError,
    SSEStatusError,
    SSETimeoutError,
)
from rawsse.client._eventsource import EventSource, SourceRecord, connect
from rawsse.client._response import SSEResponse
from rawsse.client._states import ConnectionLost, GaveUp, Opened, SourceState
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
from rawsse.parser import Comment, EventSkipped

__all__ = [
    "BodyData",
    "BodyEnd",
    "ChunkData",
    "ChunkHeader",
    "Comment",
    "ConnectionLost",
    "EventSkipped",
    "EventSource",
    "GaveUp",
    "Opened",
    "Received",
    "SSEConnectionError",
    "SSEContentTypeError",
    "SSEError",
    "SSEProtocolError",
    "SSERedirectError",
    "SSEResponse",
    "SSEStatusError",
    "SSETimeoutError",
    "Sent",
    "SourceRecord",
    "SourceState",
    "WireHook",
    "WireRecord",
    "connect",
]
