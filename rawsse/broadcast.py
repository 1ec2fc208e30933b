"""Broadcast: one event encoded once, the same bytes pushed to every subscriber's stream.

Contract: ``Broadcast.subscribe()`` returns an ``EventStream`` to answer a request with; the
stream stays open until the channel closes, the client leaves or the server shuts down.
``publish(...)`` encodes the event once and queues the same bytes on every subscriber's body,
without waiting: each subscriber drains at its own pace, and one that falls behind by more than
its hard buffer cap, or takes nothing for the send timeout, is evicted on its own. One slow
subscriber never delays the publisher or the others.
"""

from __future__ import annotations

from typing import Any

import anyio

from rawsse._counters import METRICS, StreamMetrics
from rawsse._http.body import BodyWriter
from rawsse.stream import EventStream, encode_message

__all__ = ["Broadcast"]


class Broadcast:
    """A channel fanning events out to any number of event streams."""

    def __init__(self, *, metrics: StreamMetrics = METRICS) -> None:
        self._subscribers: set[BodyWriter] = set()
        self._closed = anyio.Event()
        self.metrics = metrics
        self.published = 0

    @property
    def subscriber_count(self) -> int:
        """Streams currently subscribed."""
        return len(self._subscribers)

    def subscribe(self, **stream_options: Any) -> EventStream:
        """An ``EventStream`` fed by this channel (options as for ``EventStream``)."""
        return EventStream(self._hold, **stream_options)

    async def _hold(self, stream: EventStream) -> None:
        body = stream._body
        assert body is not None
        self._subscribers.add(body)
        try:
            # No deadline: ends when the channel closes; a departing client cancels it.
            await self._closed.wait()
        finally:
            self._subscribers.discard(body)

    def publish(self, data: Any, *, event: str | None = None, id: str | None = None) -> int:
        """Send one event to every subscriber; returns how many it was queued for."""
        return self.publish_frame(encode_message(data, event=event, id=id))

    def publish_frame(self, frame: bytes) -> int:
        """Send pre-encoded frame bytes to every subscriber."""
        self.published += 1
        count = 0
        for body in list(self._subscribers):
            if body.closed:
                self._subscribers.discard(body)
                continue
            body.push(frame)
            count += 1
        self.metrics.events_total += count
        return count

    def close(self) -> None:
        """End every subscriber's stream (each ends cleanly with its terminator)."""
        self._closed.set()
