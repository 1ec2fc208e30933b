"""The Redis replay store against a real ``redis-server``, two buses standing for two processes:
a stream produced through bus A is planned and followed through bus B. Both backends.

Covered: exact follow (replay, then live, to the end), ``plan``'s gap rules (trimmed, unknown
id, beyond the end, ahead of what was flushed), batching (round trips per event), a producer
whose process went away (``ProducerLost``, then ``abandon`` ends it for every follower), a
killed Pub/Sub connection (recovered from the log), Redis lost mid-stream (appends dropped and
counted, one log line, back after a restart), Redis slow (bounded queue), Redis restarted empty
(a new epoch, the gap reported), and credentials kept out of errors.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from rawsse._counters import StreamMetrics
from rawsse.redis import RedisBus, RedisReplayStore, RedisUnavailable, redact_url
from rawsse.replay import ProducerLost, Replay, ReplayGap, StoreUnavailable
from tests.redis_support import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def collect_garbage() -> Iterator[None]:
    """Collect garbage when the test ends, so what it leaves is reported under its marks."""
    yield
    gc.collect()


def coredis_failed_connects(test: Callable[..., Any]) -> Callable[..., Any]:
    """coredis 6.9 leaves a failed connection attempt's memory streams unclosed (its
    BaseConnection makes them in __init__ and closes them only once connected); the garbage
    collector reports each as a ResourceWarning. Harmless (they hold nothing). Only tests where
    Redis is away make failed attempts, and only they accept the warning."""
    test = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")(test)
    return pytest.mark.usefixtures("collect_garbage")(test)


def frame(n: int) -> bytes:
    return f'id: {n}\ndata: {{"n": {n}}}\n\n'.encode()


@asynccontextmanager
async def two_stores(
    redis: RedisServer, **options: float
) -> AsyncIterator[tuple[RedisReplayStore, RedisReplayStore]]:
    """Stores on two buses (two "processes") sharing ``redis``."""
    lease_s = options.pop("lease_s", 3.0)
    metrics = StreamMetrics()
    async with (
        RedisBus(redis.url, lease_s=lease_s, metrics=metrics) as a,
        RedisBus(redis.url, lease_s=lease_s, metrics=metrics) as b,
    ):
        yield RedisReplayStore(a, **options), RedisReplayStore(b, **options)  # type: ignore[arg-type]


async def produce(store: RedisReplayStore, key: str, ids: range, *, end: bool = False) -> None:
    for n in ids:
        store.append_nowait(key, str(n), frame(n))
    if end:
        await store.finish(key)
    await store.bus.flushed()


async def collect(store: RedisReplayStore, key: str, last_id: str | None) -> list[bytes]:
    got: list[bytes] = []
    await follow_into(store, key, last_id, got)
    return got


async def follow_into(
    store: RedisReplayStore, key: str, last_id: str | None, out: list[bytes]
) -> None:
    """Follow ``key`` to its end, appending each frame to ``out`` as it comes."""
    with anyio.fail_after(10):
        async for f in store.follow(key, last_id):
            out.append(f)  # noqa: PERF401 - the caller watches it grow


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    with anyio.fail_after(timeout_s):
        while not condition():
            await anyio.sleep(0.01)


async def test_follow_on_another_process_is_exact(redis: RedisServer, anyio_backend: str) -> None:
    async with two_stores(redis) as (a, b):
        await a.create("s", tag="openai")
        await produce(a, "s", range(1, 6))
        assert await b.exists("s")
        assert not await b.exists("nope")
        got: list[bytes] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_into, b, "s", "2", got)
            await until(lambda: len(got) == 3)  # replayed: now following live
            await produce(a, "s", range(6, 10), end=True)
        everything = await collect(b, "s", None)
    assert got == [frame(n) for n in range(3, 10)]
    assert everything == [frame(n) for n in range(1, 10)]


async def test_plan_reports_gaps_like_the_memory_store(
    redis: RedisServer, anyio_backend: str
) -> None:
    async with two_stores(redis, max_events_per_stream=5) as (a, b):
        await a.create("s", tag="anthropic")
        await produce(a, "s", range(1, 10), end=True)
        await a.create("live", tag="openai")
        await produce(a, "live", range(1, 4))
        plans = {last: await b.plan("s", last) for last in (None, "2", "5", "6", "9", "42", "x")}
        ahead = await b.plan("live", "7")  # the client saw frames not flushed yet
        trimmed = await collect(b, "s", "2")
        past_end = await collect(b, "s", "9")
    assert plans[None] == Replay("5", True, "anthropic", ended=True)
    assert plans["2"] == Replay("5", True, "anthropic", ended=True)
    assert plans["5"] == Replay("6", False, "anthropic", ended=True)
    assert plans["6"] == Replay("7", False, "anthropic", ended=True)
    assert plans["9"] == Replay(None, False, "anthropic", ended=True)
    assert plans["42"] == Replay(
        "5", True, "anthropic", ended=True
    )  # beyond the end: an unknown id
    assert plans["x"] == Replay("5", True, "anthropic", ended=True)
    assert ahead == Replay(None, False, "openai", ended=False)
    assert trimmed == [frame(n) for n in range(5, 10)]
    assert past_end == []


async def test_appends_go_in_batches(redis: RedisServer, anyio_backend: str) -> None:
    """64 streams x 50 frames queued in one go: a handful of round trips, not 3,200."""
    async with two_stores(redis) as (a, b):
        for s in range(64):
            await a.create(f"s{s}")
        for n in range(1, 51):
            for s in range(64):
                a.append_nowait(f"s{s}", str(n), frame(n))
        for s in range(64):
            await a.finish(f"s{s}")
        await a.bus.flushed()
        assert a.bus.frames_sent == 64 * 50
        assert a.bus.batches_sent <= 20, a.bus.batches_sent
        assert await collect(b, "s63", "45") == [frame(n) for n in range(46, 51)]


async def test_producer_gone_is_noticed_and_abandon_ends_the_stream(
    redis: RedisServer, anyio_backend: str
) -> None:
    """Bus A leaves without finishing its stream (as a killed process would: its lease goes):
    B's follower raises ProducerLost after a bounded wait; ``abandon`` ends the stream once for
    everyone with the frames given; a second abandon changes nothing."""
    metrics = StreamMetrics()
    async with RedisBus(redis.url, lease_s=0.3, metrics=metrics) as bus_b:
        b = RedisReplayStore(bus_b, poll_s=0.1)
        async with RedisBus(redis.url, lease_s=0.3, metrics=metrics) as bus_a:
            a = RedisReplayStore(bus_a, poll_s=0.1)
            await a.create("s", tag="openai")
            await produce(a, "s", range(1, 4))
        seen: list[bytes] = []
        with anyio.fail_after(10), pytest.raises(ProducerLost) as lost:
            await follow_into(b, "s", "1", seen)
        assert seen == [frame(2), frame(3)]
        assert lost.value.last_id == "3"
        tail = [("4", frame(4)), ("5", frame(5))]
        assert await b.abandon("s", "3", tail)
        assert not await b.abandon("s", "3", tail)
        assert await collect(b, "s", "3") == [frame(4), frame(5)]
        assert await collect(b, "s", None) == [frame(n) for n in range(1, 6)]


async def test_a_live_producer_is_not_taken_for_dead(
    redis: RedisServer, anyio_backend: str
) -> None:
    """A producer that is silent longer than several polls but alive keeps its followers."""
    async with two_stores(redis, poll_s=0.05, lease_s=0.3) as (a, b):
        await a.create("s")
        await produce(a, "s", range(1, 3))
        got: list[bytes] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_into, b, "s", None, got)
            await until(lambda: len(got) == 2)
            await anyio.sleep(1.0)  # the silence under test: 20 polls, 3 lease periods
            await produce(a, "s", range(3, 5), end=True)
    assert got == [frame(n) for n in range(1, 5)]


async def test_killed_pubsub_connection_loses_nothing(
    redis: RedisServer, anyio_backend: str
) -> None:
    async with two_stores(redis, poll_s=0.2) as (a, b):
        await a.create("s")
        await produce(a, "s", range(1, 3))
        got: list[bytes] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_into, b, "s", None, got)
            await until(lambda: len(got) == 2)
            assert redis.command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
            for n in range(3, 40):  # published while the hub reconnects
                a.append_nowait("s", str(n), frame(n))
                await anyio.sleep(0.002)
            await produce(a, "s", range(40, 41), end=True)
    assert got == [frame(n) for n in range(1, 41)]


@coredis_failed_connects
async def test_redis_lost_mid_stream(
    redis: RedisServer, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis dies: appends never raise, the local follower keeps streaming, dropped appends
    are counted with one log line, a follower elsewhere is told history is unavailable; the
    bus reconnects (with backoff) when Redis is back, and says so once."""
    caplog.set_level(logging.WARNING, logger="rawsse.redis")
    async with two_stores(redis, poll_s=0.1) as (a, b):
        metrics = a.bus.metrics
        await a.create("s")
        await produce(a, "s", range(1, 3))
        local: list[bytes] = []
        remote_error: list[BaseException] = []

        remote: list[bytes] = []

        async def follow_remote() -> None:
            try:
                await follow_into(b, "s", None, remote)
            except (StoreUnavailable, ReplayGap) as exc:
                remote_error.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_into, a, "s", None, local)
            tg.start_soon(follow_remote)
            await until(lambda: len(local) == 2 and len(remote) == 2)
            redis.kill()
            for n in range(3, 53):
                a.append_nowait("s", str(n), frame(n))
                await anyio.sleep(0.005)
            with anyio.fail_after(10):
                while metrics.replay_errors_total < 50:
                    await anyio.sleep(0.05)
            assert await a.exists("s")  # this process still has it
            with pytest.raises(StoreUnavailable):
                await b.plan("s", None)
            redis.start()  # back, empty
            with anyio.fail_after(15):
                while True:
                    a.append_nowait("s", "53", frame(53))  # ids after the hole
                    await a.finish("s")
                    await a.bus.flushed()
                    if redis.command("EXISTS", "rawsse:m:s"):
                        break
                    await anyio.sleep(0.2)
    assert local == [frame(n) for n in range(1, 54)]
    assert remote_error, "the follower elsewhere was not told"
    warnings = [r.getMessage() for r in caplog.records if r.name == "rawsse.redis"]
    down = [m for m in warnings if "unavailable" in m]
    back = [m for m in warnings if "is back" in m]
    # One line per process (two buses here) when Redis went away, one when it came back.
    assert 1 <= len(down) <= 2, warnings
    assert 1 <= len(back) <= 2, warnings


@coredis_failed_connects
async def test_redis_restarted_empty_is_a_new_epoch_and_a_gap(
    redis: RedisServer, anyio_backend: str
) -> None:
    async with two_stores(redis) as (a, b):
        await a.create("s", tag="openai")
        await produce(a, "s", range(1, 6))
        epoch = redis.command("HGET", "rawsse:m:s", "epoch")
        redis.restart()
        with anyio.fail_after(15):
            n = 6
            while not redis.command("EXISTS", "rawsse:s:s"):
                await produce(a, "s", range(n, n + 1))
                n += 1
                await anyio.sleep(0.1)
        await produce(a, "s", range(n, n + 2), end=True)
        new_epoch = redis.command("HGET", "rawsse:m:s", "epoch")
        with anyio.fail_after(10):
            while True:
                try:
                    plan = await b.plan("s", "3")
                    break
                except StoreUnavailable:  # B's connection is reconnecting
                    await anyio.sleep(0.1)
        replay = await collect(b, "s", "3")
    assert new_epoch is not None and new_epoch != epoch
    assert plan.gap
    assert replay and replay[-1] == frame(n + 1)
    assert replay[0] != frame(4)


async def test_redis_slow_keeps_the_queue_bounded(redis: RedisServer, anyio_backend: str) -> None:
    """Redis paused: producers are not held up, the queue stops at its bound and the excess is
    counted; when Redis answers again the bus carries on."""
    metrics = StreamMetrics()
    async with RedisBus(
        redis.url, max_pending_bytes=64 * 1024, command_timeout_s=0.5, metrics=metrics
    ) as bus:
        store = RedisReplayStore(bus)
        await store.create("s")
        await bus.flushed()
        big = b"data: " + b"x" * 1000 + b"\n\n"
        with redis.paused(1.5):
            for n in range(1, 301):  # 300 KiB against a 64 KiB bound
                store.append_nowait("s", str(n), big)
                assert bus._pending_bytes <= bus.max_pending_bytes
                if n % 50 == 0:
                    await anyio.sleep(0.01)
            dropped = metrics.replay_errors_total
            assert dropped > 0
        await store.finish("s")
        with anyio.fail_after(10):
            await bus.flushed()
    assert redis.command("HGET", "rawsse:m:s", "ended") == b"1"


@coredis_failed_connects
async def test_unreachable_redis_is_one_clean_error(anyio_backend: str) -> None:
    bus = RedisBus("redis://user:s3cret@127.0.0.1:9/0", connect_timeout_s=1.0)
    with pytest.raises(RedisUnavailable) as raised:
        async with bus:
            pass
    message = str(raised.value)
    assert "s3cret" not in message and "\n" not in message
    assert message.startswith("cannot reach Redis at redis://***@127.0.0.1:9/0: ")
    assert "s3cret" not in repr(bus)


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:6379/0") == "redis://***@h:6379/0"
    assert redact_url("rediss://u:pw@h/1") == "rediss://***@h/1"
    assert redact_url("redis://h:6379") == "redis://h:6379"
    assert redact_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


async def test_an_end_lost_with_the_pubsub_connection_still_ends_followers(
    redis: RedisServer, anyio_backend: str
) -> None:
    """The end is published while the follower's Pub/Sub connection is down: the follower
    finds it in the log at its next poll, instead of staying open forever."""
    async with two_stores(redis, poll_s=0.2) as (a, b):
        await a.create("s")
        await produce(a, "s", range(1, 3))
        got: list[bytes] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_into, b, "s", None, got)
            await until(lambda: len(got) == 2)
            redis.command("CLIENT", "KILL", "TYPE", "pubsub")
            await produce(a, "s", range(3, 4), end=True)
    assert got == [frame(1), frame(2), frame(3)]


async def test_resumes_racing_the_end(redis: RedisServer, anyio_backend: str) -> None:
    """Resumes that start as the producer finishes each get the rest, and end."""
    async with two_stores(redis, poll_s=0.2) as (a, b):
        results: dict[int, list[bytes]] = {}

        async def resume(key: int) -> None:
            results[key] = await collect(b, f"s{key}", "3")

        async with anyio.create_task_group() as tg:
            for key in range(20):
                await a.create(f"s{key}")
                await produce(a, f"s{key}", range(1, 6))
                tg.start_soon(resume, key)
                for _ in range(key % 4):
                    await anyio.lowlevel.checkpoint()  # finish at different points of the resume
                await a.finish(f"s{key}")
    assert results == {key: [frame(4), frame(5)] for key in range(20)}
