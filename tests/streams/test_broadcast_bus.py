"""``Broadcast`` against a ``ChannelBus`` written for the test: in memory, with the live feed
under the test's control, to pin the orders a real bus cannot be made to produce on demand.

The bug this pins: a subscriber catching up with ``Last-Event-ID`` read an event from the
history, and then got it again from the live feed, whose delivery of that event came after the
history's reply (they travel on different connections).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from rawsse.app import App
from rawsse.broadcast import Broadcast
from rawsse.request import Request
from rawsse.stream import EventStream
from tests.chat_support import open_stream
from tests.support import running_server

pytestmark = pytest.mark.anyio


class HeldBackBus:
    """A ``ChannelBus`` in memory: publishes go to the history at once; the live feed delivers
    them only when the test calls ``deliver()``."""

    def __init__(self) -> None:
        self.history_entries: list[tuple[int, bytes]] = []
        self.sink: Callable[[int, bytes], None] | None = None
        self.undelivered: list[tuple[int, bytes]] = []

    def queue_publish(self, channel: str, frame: bytes) -> None:
        number = len(self.history_entries) + 1
        entry = (number, f"id: {number}\n".encode() + frame)
        self.history_entries.append(entry)
        self.undelivered.append(entry)

    async def attach(self, channel: str, sink: Callable[[int, bytes], None]) -> None:
        self.sink = sink

    def detach(self, channel: str) -> None:
        self.sink = None

    async def history(self, channel: str, after: int, count: int) -> tuple[int, list[Any]]:
        kept = [e for e in self.history_entries if e[0] > after][:count]
        return len(self.history_entries), kept

    def configure_history(self, *, length: int, ttl_s: float) -> None:
        pass

    def deliver(self) -> None:
        assert self.sink is not None
        for number, frame in self.undelivered:
            self.sink(number, frame)
        self.undelivered.clear()


async def test_history_that_overtakes_the_live_feed_is_not_sent_twice(
    anyio_backend: str,
) -> None:
    bus = HeldBackBus()
    news = Broadcast(channel="news", bus=bus)
    app = App()

    @app.get("/events")
    async def events(request: Request) -> EventStream:
        return news.subscribe(last_event_id=request.last_event_id)

    async with running_server(app) as server:
        async with open_stream(server, "/events", method="GET") as first:  # type: ignore[arg-type]
            with anyio.fail_after(5):
                while news.subscriber_count < 1:
                    await anyio.sleep(0.01)
            for n in range(1, 4):
                news.publish(f"m{n}")
            bus.deliver()
            await first.read_events(3)
            news.publish("m4")
            news.publish("m5")  # in the history; the live feed has not delivered them yet
            async with open_stream(
                server,  # type: ignore[arg-type]
                "/events",
                method="GET",
                headers={"last-event-id": "3"},
            ) as back:
                with anyio.fail_after(5):
                    while news.subscriber_count < 2:
                        await anyio.sleep(0.01)
                bus.deliver()  # now the live feed brings 4 and 5, to both
                news.publish("m6")
                bus.deliver()
                rest = await back.read_events(3)
                await first.read_events(6)
                with anyio.move_on_after(0.2):  # anything more would be a duplicate
                    await back.read_events(4)
    assert [(e.id, e.data) for e in rest] == [("4", "m4"), ("5", "m5"), ("6", "m6")]
    assert [e.id for e in first.events] == ["1", "2", "3", "4", "5", "6"]
