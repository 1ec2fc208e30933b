"""What an ``EventSource`` reports about its connection: a browser's ``open`` and ``error``, typed.

Contract: an ``EventSource`` makes one of these at each change of its connection, in order, and
hands it to its ``on_state`` callback and to ``records()`` iteration (plain iteration gives
events only):

- ``Opened``: a response was accepted (200, ``text/event-stream``) and its events follow; a
  browser fires ``open``. ``reconnects`` is 0 for the first connection.
- ``ConnectionLost``: the connection ended (the server closed the stream, a read failed or
  timed out, the connection could not be made) or was restarted, and the source will connect
  again after ``retry_s`` seconds; a browser fires ``error`` with ``readyState`` CONNECTING.
- ``GaveUp``: ``max_reconnects`` attempts in a row brought no event; the source is closed and
  raises ``error`` next; a browser fires ``error`` with ``readyState`` CLOSED.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rawsse.client._errors import SSEConnectionError

__all__ = ["ConnectionLost", "GaveUp", "Opened", "SourceState", "StateHook"]


@dataclass(frozen=True, slots=True)
class Opened:
    """A connection is open and its events follow (a browser's ``open`` event).

    ``url`` is the URL that answered (after redirects, which count for this connection only),
    ``reconnects`` how many reconnections came before it, ``last_event_id`` what was sent as
    ``Last-Event-ID`` (``""``: none).
    """

    url: str
    reconnects: int
    last_event_id: str


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The connection ended or failed; the next attempt comes after ``retry_s`` seconds.

    ``error`` is what failed (``None`` when the server ended the stream cleanly, or on a
    restart), ``reason`` says it in words, ``attempt`` counts the attempts in a row that
    brought no event (1 after a stream that delivered events).
    """

    reason: str
    retry_s: float
    attempt: int
    error: SSEConnectionError | None = None


@dataclass(frozen=True, slots=True)
class GaveUp:
    """Reconnection was given up; ``error`` (raised next) says why and chains the last failure."""

    error: SSEConnectionError


SourceState = Opened | ConnectionLost | GaveUp
StateHook = Callable[[SourceState], None]
