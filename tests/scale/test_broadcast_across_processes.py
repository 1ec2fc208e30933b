"""``Broadcast`` across real processes: ``rawsse serve tests.scale.apps:broadcast_app --redis
URL`` on two ports, and with ``--workers 2`` on one, sharing one ``redis-server``. A publish on
one process reaches the subscribers of every process, numbered the same everywhere; a
subscriber that reconnects to another process with ``Last-Event-ID`` gets what it missed."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import httpx
import pytest

from tests.chat_support import PartialStream, open_stream
from tests.redis_support import RedisServer
from tests.scale.scale_support import Node, node

pytestmark = pytest.mark.anyio

APP = "tests.scale.apps:broadcast_app"


async def subscribers(client: httpx.AsyncClient, at: Node) -> int:
    return int((await client.get(f"{at.url}/subscribers")).text)


async def wait_subscribed(client: httpx.AsyncClient, at: Node, count: int) -> None:
    with anyio.fail_after(15):
        while await subscribers(client, at) < count:
            await anyio.sleep(0.02)


async def test_a_publish_reaches_every_process(redis: RedisServer, anyio_backend: str) -> None:
    common = (APP, "--redis", redis.url, "--backend", anyio_backend)
    with node(*common) as a, node(*common) as b:
        async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=15) as client:
            streams: list[PartialStream] = []
            for at in (a, b):
                streams += [
                    await stack.enter_async_context(open_stream(at, "/events", method="GET"))
                    for _ in range(5)
                ]
                await wait_subscribed(client, at, 5)
            for n in range(1, 4):
                await client.post(f"{a.url}/publish", content=f"from a {n}")
            await client.post(f"{b.url}/publish", content="from b")
            for stream in streams:
                await stream.read_events(4)
            # One comes back on the other process, having missed two.
            await client.post(f"{a.url}/publish", content="missed 1")
            await client.post(f"{a.url}/publish", content="missed 2")
            async with open_stream(
                b, "/events", method="GET", headers={"last-event-id": "4"}
            ) as back:
                await client.post(f"{b.url}/publish", content="live")
                rest = await back.read_events(3)
    for stream in streams:
        assert [e.data for e in stream.events[:3]] == [f"from a {n}" for n in range(1, 4)]
        assert stream.events[3].data == "from b"
        assert [e.id for e in stream.events[:4]] == ["1", "2", "3", "4"]
    assert [(e.id, e.data) for e in rest] == [("5", "missed 1"), ("6", "missed 2"), ("7", "live")]


async def test_workers_share_one_channel(redis: RedisServer, anyio_backend: str) -> None:
    """``--workers 2`` on one port: whichever worker takes the publish, every subscriber of
    every worker gets it, in one order."""
    with node(APP, "--workers", "2", "--redis", redis.url, "--backend", anyio_backend) as srv:
        async with AsyncExitStack() as stack:
            streams = [
                await stack.enter_async_context(open_stream(srv, "/events", method="GET"))
                for _ in range(12)
            ]
            # Both workers have subscribers once Redis counts two subscriptions to the channel.
            with anyio.fail_after(15):
                while redis.command("PUBSUB", "NUMSUB", "rawsse:b:news")[1] < 2:
                    await anyio.sleep(0.02)
            limits = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(timeout=15, limits=limits) as client:
                for stream in streams:
                    assert stream.status == 200
                for n in range(1, 11):
                    await client.post(f"{srv.url}/publish", content=f"m{n}")
            for stream in streams:
                await stream.read_events(10)
    # Publishes taken by different workers race to Redis: the order is Redis's, and the same
    # for every subscriber of every worker.
    order = [e.data for e in streams[0].events]
    assert sorted(order) == sorted(f"m{n}" for n in range(1, 11))
    for stream in streams:
        assert [e.data for e in stream.events] == order
        assert [e.id for e in stream.events] == [str(n) for n in range(1, 11)]
