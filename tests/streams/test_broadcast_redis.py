"""``Broadcast`` on a Redis bus, against a real ``redis-server``: two servers in this process,
each with its own bus (two "processes"), one channel. Both backends.

Covered: a publish on one node reaches subscribers on both, numbered; a subscriber that comes
back with ``Last-Event-ID`` gets what it missed, then live, without gap or duplicate; a
history that no longer holds what it missed says so (``event: rawsse-gap``); a killed Pub/Sub
connection loses nothing; one subscription per node whatever its number of clients; a slow
subscriber is evicted alone; ``publish`` refuses an id of its own.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest

from rawsse.app import App
from rawsse.broadcast import Broadcast
from rawsse.redis import RedisBus
from rawsse.request import Request
from rawsse.server import Server
from rawsse.stream import EventStream
from tests.chat_support import PartialStream, open_stream
from tests.redis_support import RedisServer
from tests.support import running_server

pytestmark = pytest.mark.anyio


@dataclass
class Node:
    server: Server
    news: Broadcast
    bus: RedisBus

    @property
    def port(self) -> int:
        return self.server.port


@asynccontextmanager
async def node(redis: RedisServer, history: int = 1000) -> AsyncIterator[Node]:
    """A server with one channel, ``news``, on its own bus (one process of a deployment)."""
    async with RedisBus(redis.url) as bus:
        news = Broadcast(channel="news", bus=bus, history=history)
        app = App()

        @app.get("/events")
        async def events(request: Request) -> EventStream:
            return news.subscribe(last_event_id=request.last_event_id, send_timeout_s=0.5)

        async with running_server(app) as server:
            yield Node(server, news, bus)
            news.close()


@asynccontextmanager
async def subscribed(
    at: Node, count: int = 1, last_event_id: str | None = None
) -> AsyncIterator[list[PartialStream]]:
    """``count`` clients subscribed at ``at`` (each counted there before the block starts)."""
    headers = {"last-event-id": last_event_id} if last_event_id is not None else None
    before = at.news.subscriber_count
    async with AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(
                open_stream(at, "/events", method="GET", headers=headers)  # type: ignore[arg-type]
            )
            for _ in range(count)
        ]
        await until(lambda: at.news.subscriber_count == before + count)
        yield streams


async def until(condition: object, timeout_s: float = 10.0) -> None:
    with anyio.fail_after(timeout_s):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.01)


def ids(events: list) -> list[str | None]:  # type: ignore[type-arg]
    return [e.id for e in events]


async def test_a_publish_reaches_every_node(redis: RedisServer, anyio_backend: str) -> None:
    async with node(redis) as a, node(redis) as b:
        async with subscribed(a, 2) as at_a, subscribed(b, 3) as at_b:
            for n in range(5):
                a.news.publish(f"m{n}")
            for client in at_a + at_b:
                await client.read_events(5)
            b.news.publish({"from": "b"}, event="note")  # (after A's: one order for all)
            for client in at_a + at_b:
                await client.read_events(6)
        # One Pub/Sub subscription per node for the channel, not one per client.
        channels = redis.command("PUBSUB", "NUMSUB", "rawsse:b:news")
        assert channels[1] == 2
    for client in at_a + at_b:
        events = client.events
        assert [e.data for e in events] == [f"m{n}" for n in range(5)] + ['{"from":"b"}']
        assert ids(events) == [str(n) for n in range(1, 7)]
        assert events[-1].event == "note"


async def test_a_subscriber_that_comes_back_gets_what_it_missed(
    redis: RedisServer, anyio_backend: str
) -> None:
    async with node(redis) as a, node(redis) as b:
        async with subscribed(b) as [first]:
            for n in range(1, 4):
                a.news.publish(f"m{n}")
            seen = await first.read_events(3)
        for n in range(4, 9):  # while the client is away
            a.news.publish(f"m{n}")
        await a.bus.flushed()
        async with subscribed(b, last_event_id="3") as [back]:
            a.news.publish("m9")
            rest = await back.read_events(6)
    assert [e.data for e in seen + rest] == [f"m{n}" for n in range(1, 10)]
    assert ids(seen + rest) == [str(n) for n in range(1, 10)]


async def test_a_trimmed_history_says_so(redis: RedisServer, anyio_backend: str) -> None:
    async with node(redis, history=3) as a:
        for n in range(1, 11):
            a.news.publish(f"m{n}")
        await a.bus.flushed()
        async with subscribed(a, last_event_id="2") as [back]:
            events = await back.read_events(4)
    gap, *kept = events
    assert gap.event == "rawsse-gap" and gap.id is None
    assert gap.data == '{"after":"2","resumes_at":"8"}'
    assert [e.data for e in kept] == ["m8", "m9", "m10"]


async def test_killed_pubsub_connection_loses_nothing(
    redis: RedisServer, anyio_backend: str
) -> None:
    async with node(redis) as a, node(redis) as b:
        async with subscribed(b) as [client]:
            for n in range(1, 4):
                a.news.publish(f"m{n}")
            await client.read_events(3)
            assert redis.command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
            for n in range(4, 31):
                a.news.publish(f"m{n}")
                await anyio.sleep(0.005)
            events = await client.read_events(30, timeout_s=15)
    assert [e.data for e in events] == [f"m{n}" for n in range(1, 31)]
    assert ids(events) == [str(n) for n in range(1, 31)]


async def test_a_slow_subscriber_is_evicted_alone(redis: RedisServer, anyio_backend: str) -> None:
    async with node(redis) as a, node(redis) as b:
        async with subscribed(b) as [reader]:
            with socket.socket() as stalled:  # subscribes, then never reads
                stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                stalled.connect(("127.0.0.1", b.port))
                stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
                await until(lambda: b.news.subscriber_count == 2)
                for _ in range(200):  # 3.2 MB: more than the stalled socket's buffers take
                    a.news.publish("y" * 16_000)
                    await anyio.sleep(0.002)
                    await reader.read_events(1)  # the reader keeps up
                await until(lambda: b.news.subscriber_count == 1, timeout_s=20)
                a.news.publish("after")
                events = await reader.read_until(lambda ev: ev[-1].data == "after", 20)
    assert len(events) == 201
    assert ids(events) == [str(n) for n in range(1, 202)]


async def test_publish_on_a_bus_numbers_its_events(redis: RedisServer, anyio_backend: str) -> None:
    async with node(redis) as a:
        with pytest.raises(ValueError, match="id must be None"):
            a.news.publish("x", id="7")
    with pytest.raises(ValueError, match="channel"):
        Broadcast(bus=a.bus)
