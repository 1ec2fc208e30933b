"""Broadcast: one event encoded once, the same bytes pushed to every subscriber's stream.

Contract: ``Broadcast.subscribe()`` returns an ``EventStream`` to answer a request with; the
stream stays open until the channel closes, the client leaves or the server shuts down.
``publish(...)`` encodes the event once and queues the same bytes on every subscriber's body,
without waiting: each subscriber drains at its own pace, and one that falls behind by more than
its hard buffer cap, or takes nothing for the send timeout, is evicted on its own. One slow
subscriber never delays the publisher or the others.

Across processes and machines: ``Broadcast(channel="news", bus=bus)`` with a ``ChannelBus``
(``rawsse.redis.RedisBus``). A publish then goes to the bus, which numbers it (``id: N``,
increasing per channel), keeps it in the channel's bounded history and delivers it to every
process subscribed to the channel (one subscription per process, whatever its number of
clients); each process pushes it to its own subscribers as above. ``subscribe(last_event_id=
...)`` first replays from the history what the client missed, then follows live, with no gap and
no duplicate at the hand-off. Events the history no longer holds are announced by one
``event: rawsse-gap`` frame (no ``id:``, so the client keeps its last id) before the replay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import anyio

from rawsse._counters import METRICS, StreamMetrics
from rawsse._http.body import BodyWriter
from rawsse.jsonio import dumps
from rawsse.sse import encode_event
from rawsse.stream import EventStream, encode_message

__all__ = ["Broadcast", "ChannelBus"]

# Live events a subscriber that is still reading the history may have queued for it.
_CATCH_UP_BUFFER = 4096


class ChannelBus(Protocol):
    """What a ``Broadcast`` needs to reach the other processes (``rawsse.redis.RedisBus``)."""

    def queue_publish(self, channel: str, frame: bytes) -> None:
        """Publish ``frame`` (a whole frame without an ``id:`` line) on ``channel``, without
        waiting; the bus adds the channel's next id."""

    async def attach(self, channel: str, sink: Callable[[int, bytes], None]) -> None:
        """From now on, call ``sink(id, frame)`` for each event of ``channel``, in order, once."""

    def detach(self, channel: str) -> None:
        """Stop calling the sink of ``channel``."""

    async def history(self, channel: str, after: int, count: int) -> tuple[int, list[Any]]:
        """The newest id of ``channel`` and up to ``count`` ``(id, frame)`` after ``after``."""

    def configure_history(self, *, length: int, ttl_s: float) -> None:
        """Bound the channel histories: events kept, and expiry after the last publish."""


class Broadcast:
    """A channel fanning events out to any number of event streams (see the module)."""

    def __init__(
        self,
        *,
        channel: str | None = None,
        bus: ChannelBus | None = None,
        history: int = 1000,  # events a reconnecting subscriber can get back (with a bus)
        history_ttl_s: float = 86_400.0,  # a silent channel's history is kept this long
        metrics: StreamMetrics = METRICS,
    ) -> None:
        if bus is not None and not channel:
            raise ValueError("a Broadcast on a bus needs a channel name")
        if history < 0:
            raise ValueError("history must be >= 0")
        self._subscribers: set[BodyWriter] = set()
        self._closed = anyio.Event()
        self.metrics = metrics
        self.published = 0
        self.channel = channel or ""
        self.bus = bus
        self.history = history
        if bus is not None:
            bus.configure_history(length=max(history, 1), ttl_s=history_ttl_s)
        self._attached: anyio.Event | None = None
        # Subscribers still reading the history: live events wait here for them.
        self._catching_up: dict[BodyWriter, list[tuple[int, bytes]]] = {}
        # Subscribers whose history went past the last live event delivered here (the
        # history's reply can overtake the live feed): they skip live events up to that id.
        self._ahead: dict[BodyWriter, int] = {}
        self._last_live = 0

    @property
    def subscriber_count(self) -> int:
        """Streams of this process currently subscribed."""
        return len(self._subscribers)

    def subscribe(self, *, last_event_id: str | None = None, **stream_options: Any) -> EventStream:
        """An ``EventStream`` fed by this channel (options as for ``EventStream``). With a bus
        and the client's ``last_event_id``, what it missed is replayed first."""

        async def hold(stream: EventStream) -> None:
            await self._hold(stream, last_event_id)

        return EventStream(hold, **stream_options)

    async def _hold(self, stream: EventStream, last_event_id: str | None) -> None:
        body = stream._body
        assert body is not None
        if self.bus is not None:
            await self._attach()
            if last_event_id is not None:
                await self._catch_up(body, last_event_id)
        self._subscribers.add(body)
        try:
            # No deadline: ends when the channel closes; a departing client cancels it.
            await self._closed.wait()
        finally:
            self._subscribers.discard(body)
            self._ahead.pop(body, None)

    async def _attach(self) -> None:
        bus = self.bus
        assert bus is not None
        if self._attached is None:
            self._attached = attached = anyio.Event()
            try:
                await bus.attach(self.channel, self._deliver)
            finally:
                attached.set()
        else:
            # No deadline: the first subscriber's attach is bounded by the bus's timeouts.
            await self._attached.wait()

    async def _catch_up(self, body: BodyWriter, last_event_id: str) -> None:
        bus = self.bus
        assert bus is not None
        after = int(last_event_id) if last_event_id.isdigit() and len(last_event_id) < 19 else 0
        pending = self._catching_up[body] = []
        try:
            top, entries = await bus.history(self.channel, after, self.history)
            if after > top:
                # Not an id of this channel as it is now (it started over): everything kept.
                after = 0
                top, entries = await bus.history(self.channel, 0, self.history)
            last = after
            if entries and entries[0][0] > after + 1:
                body.push(_gap_frame(after, entries[0][0]))
            for number, frame in entries:
                body.push(frame)
                last = number
            for number, frame in pending:
                if number > last:
                    body.push(frame)
                    last = number
            if last > self._last_live:
                self._ahead[body] = last
            self.metrics.events_total += len(entries)
        finally:
            del self._catching_up[body]

    def publish(self, data: Any, *, event: str | None = None, id: str | None = None) -> int:
        """Send one event to every subscriber; returns how many in this process it was queued
        for (with a bus: how many are subscribed here; each gets it when the bus delivers it,
        with the id the bus gives it, so ``id`` must be None)."""
        if self.bus is not None and id is not None:
            raise ValueError("a Broadcast on a bus numbers its events itself: id must be None")
        return self.publish_frame(encode_message(data, event=event, id=id))

    def publish_frame(self, frame: bytes) -> int:
        """Send pre-encoded frame bytes to every subscriber (with a bus: without an ``id:``)."""
        self.published += 1
        if self.bus is not None:
            self.bus.queue_publish(self.channel, frame)
            return len(self._subscribers)
        return self._push(frame)

    def _deliver(self, number: int, frame: bytes) -> None:
        # The bus's delivery of event ``number`` (its frame has the ``id:`` line).
        if number < self._last_live:
            self._ahead.clear()  # the channel started over
        self._last_live = number
        for pending in self._catching_up.values():
            if len(pending) < _CATCH_UP_BUFFER:
                pending.append((number, frame))
        if not self._ahead:
            self._push(frame)
            return
        skip = {body for body, upto in self._ahead.items() if number <= upto}
        for body in [body for body, upto in self._ahead.items() if number >= upto]:
            del self._ahead[body]
        self._push(frame, skip)

    def _push(self, frame: bytes, skip: set[BodyWriter] | None = None) -> int:
        count = 0
        for body in list(self._subscribers):
            if body.closed:
                self._subscribers.discard(body)
                self._ahead.pop(body, None)
                continue
            if skip and body in skip:
                continue
            body.push(frame)
            count += 1
        self.metrics.events_total += count
        return count

    def close(self) -> None:
        """End every subscriber's stream (each ends cleanly with its terminator)."""
        self._closed.set()
        if self.bus is not None and self._attached is not None:
            self.bus.detach(self.channel)


def _gap_frame(after: int, first: int) -> bytes:
    """The frame announcing that events ``after + 1`` ... ``first - 1`` are no longer kept."""
    data = dumps({"after": str(after) if after else None, "resumes_at": str(first)})
    return encode_event(data.decode(), event="rawsse-gap")
