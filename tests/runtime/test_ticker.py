"""``Ticker`` and ``sleep`` on the server's shared timer, over real sockets, both backends."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import rawsse
from rawsse import App, EventStream, Request, Response, Ticker
from tests.support import (
    blocking_socket,
    get,
    read_to_chunked_end,
    recv_some,
    request,
    reset_close,
    running_server,
    wait_for,
)

pytestmark = pytest.mark.anyio

# Loose bounds: these tests check the schedule, not the machine's speed.
LATE_LIMIT_S = 0.5
# A tick is never early; this only absorbs float rounding between two clock readings.
CLOCK_TOLERANCE_S = 1e-4


def ticker_app(state: dict[str, Any]) -> App:
    app = App()

    @app.get("/ticks")
    async def ticks(req: Request) -> EventStream:
        count = int(req.query.get("n", "5"))
        interval = float(req.query.get("interval", "0.02"))
        stall = float(req.query.get("stall", "0"))

        async def source() -> AsyncIterator[dict[str, Any]]:
            ticker = Ticker(interval)
            state["ticker"] = ticker
            state["origin"] = ticker.next_at
            try:
                for i in range(count):
                    if i:
                        await ticker.tick()
                    state.setdefault("times", []).append(time.monotonic())
                    if i == 1 and stall:
                        time.sleep(stall)  # noqa: ASYNC251 - blocks on purpose: falls behind its schedule
                    yield {"i": i}
            finally:
                state["closed"] = True

        return EventStream(source(), heartbeat_s=0)

    @app.get("/block")
    async def block(req: Request) -> Response:
        time.sleep(float(req.query.get("s", "0.2")))  # noqa: ASYNC251 - stalls the loop on purpose
        # Then, optionally, hog the loop in chunks: every other ready task runs between two,
        # so each of their checkpoints costs them a chunk (a loop busy with other streams).
        for _ in range(int(req.query.get("chunks", "0"))):
            await anyio.lowlevel.checkpoint()
            time.sleep(float(req.query.get("each", "0.04")))  # noqa: ASYNC251 - on purpose
        return Response("blocked\n")

    @app.get("/sleeps")
    async def sleeps(req: Request) -> EventStream:
        seconds = float(req.query.get("s", "0.03"))
        first = float(req.query.get("first", seconds))

        async def produce(stream: EventStream) -> None:
            state["start"] = time.monotonic()
            try:
                for i in range(int(req.query.get("n", "3"))):
                    started = time.monotonic()
                    await rawsse.sleep(seconds if i else first)
                    state.setdefault("ends", []).append(time.monotonic())
                    state.setdefault("slept", []).append(state["ends"][-1] - started)
                    await stream.send({"i": i})
            finally:
                state["closed"] = True

        return EventStream(produce, heartbeat_s=0)

    return app


async def read_stream(port: int, path: str) -> bytes:
    sock = blocking_socket(port)
    try:
        sock.sendall(get(path))
        return await read_to_chunked_end(sock)
    finally:
        sock.close()


async def test_ticks_follow_the_schedule_on_the_shared_timer() -> None:
    state: dict[str, Any] = {}
    async with running_server(ticker_app(state)) as server:
        seen = await read_stream(server.port, "/ticks?n=6&interval=0.03")
        assert seen.count(b"data: ") == 6
        assert state["ticker"]._reactor is server.reactor  # not the anyio.sleep fallback
        origin, times = state["origin"], state["times"]
        for k, at in enumerate(times):
            due = origin + k * 0.03
            assert at >= due - CLOCK_TOLERANCE_S, f"tick {k} came {due - at:.4f} s early"
            assert at <= due + LATE_LIMIT_S


async def test_a_late_producer_catches_up_without_drift() -> None:
    state: dict[str, Any] = {}
    async with running_server(ticker_app(state)) as server:
        # Event 1 blocks the loop for 0.2 s: ticks 2..6 (due 0.06..0.15 s) are all past due then.
        await read_stream(server.port, "/ticks?n=10&interval=0.03&stall=0.2")
        origin, times = state["origin"], state["times"]
        assert times[6] - times[2] < 0.05  # the overdue ticks came at once
        for k in (8, 9):  # and the schedule did not move: later ticks are on the original grid
            due = origin + k * 0.03
            assert due - CLOCK_TOLERANCE_S <= times[k] <= due + LATE_LIMIT_S


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_client_leaving_during_a_tick_cancels_the_producer(how: str) -> None:
    state: dict[str, Any] = {}
    async with running_server(ticker_app(state)) as server:
        sock = blocking_socket(server.port)
        sock.sendall(get("/ticks?n=3&interval=30"))  # parked in tick() for 30 s
        seen = b""
        while b"data: " not in seen:
            seen += await recv_some(sock)
        started = time.monotonic()
        reset_close(sock) if how == "rst" else sock.close()
        await wait_for(lambda: state.get("closed", False), timeout_s=3)
        assert time.monotonic() - started < 2.0
        await wait_for(lambda: server.stats.connections_active == 0)
        # The cancelled tick's timer entry is still in the heap; it wakes nobody when due.
        assert server.reactor.timer_count >= 1


async def test_cancelled_tick_does_not_wake_a_later_one() -> None:
    state: dict[str, Any] = {}
    async with running_server(ticker_app(state)) as server:
        await read_stream(server.port, "/ticks?n=1")
        ticker = Ticker(0.05)
        ticker._reactor = server.reactor  # as if made inside a handler of this server
        origin = ticker.next_at
        with anyio.move_on_after(0.01):
            await ticker.tick()  # its entry (due at +0.05) stays in the heap
        await ticker.tick()  # due at +0.10: the stale entry at +0.05 must not end this early
        # (Measured from the schedule's origin, not from when the cancelled wait returned: on
        # a busy machine that can be late, leaving less than 0.09 s to wait.)
        assert time.monotonic() >= origin + 0.10 - CLOCK_TOLERANCE_S


async def test_outside_a_server_it_falls_back_to_sleep() -> None:
    ticker = Ticker(0.02)
    assert ticker._reactor is None
    started = time.monotonic()
    for _ in range(3):
        await ticker.tick()
    await ticker.tick(0.04)  # a step of its own
    assert time.monotonic() - started >= 0.1 - 0.001


def test_bad_intervals_are_refused() -> None:
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="interval_s must be >= 0"):
            Ticker(bad)
    ticker = Ticker(0)
    with pytest.raises(ValueError, match="step_s must be >= 0"):
        anyio.run(ticker.tick, -0.5)


async def test_shared_timer_entries_never_fire_early() -> None:
    fired: list[tuple[float, float]] = []

    class Probe:
        def __init__(self, due: float) -> None:
            self.due = due

        def on_timer(self, now: float) -> None:
            fired.append((self.due, time.monotonic()))

    async with running_server(App()) as server:
        start = time.monotonic()
        for k in range(20):  # due times 1 ms apart: all within one slack of each other
            server.reactor.call_at(start + 0.02 + k * 0.001, Probe(start + 0.02 + k * 0.001))
        await wait_for(lambda: len(fired) == 20)
    for due, at in fired:
        assert due - CLOCK_TOLERANCE_S <= at <= due + LATE_LIMIT_S


async def test_sleep_waits_on_the_shared_timer_and_never_returns_early() -> None:
    state: dict[str, Any] = {}
    async with running_server(ticker_app(state)) as server:
        reactor = server.reactor
        registered: list[object] = []
        call_at = reactor.call_at

        def spy(when: float, target: Any) -> None:
            registered.append(target)
            call_at(when, target)

        reactor.call_at = spy  # type: ignore[method-assign]
        seen = await read_stream(server.port, "/sleeps?n=4&s=0.03")
        assert seen.count(b"data: ") == 4
        assert sum(hasattr(t, "park_until") for t in registered) == 4  # waits on the shared timer
        # Never early against the schedule the sleeps keep (each due a wait after the last).
        for k, end in enumerate(state["ends"]):
            due = state["start"] + (k + 1) * 0.03
            assert due - CLOCK_TOLERANCE_S <= end <= due + LATE_LIMIT_S


class _BusyTimer:
    """A shared-timer entry due again every millisecond: the timer then ticks a slack apart,
    as under thousands of paced streams, and each wait ends up to a slack late."""

    def __init__(self) -> None:
        self.stopped = False

    def on_timer(self, now: float) -> float | None:
        return None if self.stopped else now + 0.001


async def test_sleeps_hold_their_rate_when_the_timer_is_busy() -> None:
    state: dict[str, Any] = {}
    count, seconds = 40, 0.03
    async with running_server(ticker_app(state)) as server:
        busy = _BusyTimer()
        server.reactor.call_at(time.monotonic(), busy)
        try:
            seen = await read_stream(server.port, f"/sleeps?n={count}&s={seconds}")
        finally:
            busy.stopped = True
    assert seen.count(b"data: ") == count
    # Each sleep's lateness is taken off the next: the k-th ends near start + k waits, never
    # before it, and how far behind it is does not grow (without that: a few ms more per wait,
    # ~0.1 s between the first and the last third of the waits).
    behind = [end - (state["start"] + (k + 1) * seconds) for k, end in enumerate(state["ends"])]
    assert min(behind) >= -CLOCK_TOLERANCE_S
    third = count // 3
    drift = statistics.median(behind[-third:]) - statistics.median(behind[:third])
    assert drift < 0.03, f"sleeps drifted {drift:.3f} s: {[round(b, 4) for b in behind]}"


async def test_sleeps_behind_by_whole_waits_catch_up() -> None:
    state: dict[str, Any] = {}
    async with running_server(ticker_app(state)) as server:
        sock = blocking_socket(server.port)
        try:
            sock.sendall(get("/sleeps?n=14&s=0.03"))
            seen = b""
            while seen.count(b"data: ") < 2:
                seen += await recv_some(sock)
            # Another request stalls the loop 0.2 s while the stream waits in its third sleep:
            # it resumes ~6 waits late.
            await request(server.port, get("/block?s=0.2"))
            seen = await read_to_chunked_end(sock, seen)
        finally:
            sock.close()
    start, ends = state["start"], state["ends"]
    assert ends[7] - ends[3] < 0.05  # the overdue sleeps returned at once
    for k in (12, 13):  # and the later ones are back on the schedule
        due = start + (k + 1) * 0.03
        assert due - CLOCK_TOLERANCE_S <= ends[k] <= due + LATE_LIMIT_S


async def test_sleeps_catching_up_on_a_busy_loop_count_the_time_their_checkpoints_take() -> None:
    # Behind by whole waits, sleeps return after one checkpoint each; on a loop busy with other
    # tasks each such checkpoint takes a while (here a 40 ms chunk of another task), and that
    # time must count against the schedule too, or every overdue sleep loses it for good.
    state: dict[str, Any] = {}
    count, seconds = 24, 0.03
    async with running_server(ticker_app(state)) as server:
        sock = blocking_socket(server.port)
        try:
            sock.sendall(get(f"/sleeps?n={count}&s={seconds}"))
            seen = b""
            while seen.count(b"data: ") < 2:
                seen += await recv_some(sock)
            # A 0.2 s stall (the stream falls ~6 waits behind), then 8 chunks of 40 ms.
            await request(server.port, get("/block?s=0.2&chunks=8&each=0.04"))
            seen = await read_to_chunked_end(sock, seen)
        finally:
            sock.close()
    start, ends = state["start"], state["ends"]
    assert len(ends) == count
    # The busy spell ends ~0.6 s in; the last waits are due at 0.69 and 0.72 s: back on the
    # schedule by then (without the checkpoints counted: ~0.25 s behind it for good).
    for k in (count - 2, count - 1):
        due = start + (k + 1) * seconds
        assert due - CLOCK_TOLERANCE_S <= ends[k] <= due + 0.12, [
            round(end - start - (i + 1) * seconds, 3) for i, end in enumerate(ends)
        ]


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_client_leaving_during_a_sleep_cancels_the_producer(how: str) -> None:
    state: dict[str, Any] = {}
    async with running_server(ticker_app(state)) as server:
        sock = blocking_socket(server.port)
        sock.sendall(get("/sleeps?n=2&first=0&s=30"))
        seen = b""
        while b"data: " not in seen:
            seen += await recv_some(sock)
        started = time.monotonic()  # the producer is in its 30 s sleep now
        reset_close(sock) if how == "rst" else sock.close()
        await wait_for(lambda: state.get("closed", False), timeout_s=3)
        assert time.monotonic() - started < 2.0
        assert len(state.get("slept", [])) == 1
        await wait_for(lambda: server.stats.connections_active == 0)


async def test_sleep_outside_a_server_and_bad_values() -> None:
    started = time.monotonic()
    await rawsse.sleep(0.02)
    await rawsse.sleep(0)
    assert time.monotonic() - started >= 0.02 - CLOCK_TOLERANCE_S
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="seconds must be >= 0"):
            rawsse.sleep(bad)


async def test_a_wait_made_now_and_awaited_later_still_ends() -> None:
    state: dict[str, Any] = {}
    async with running_server(ticker_app(state)) as server:
        ticker = Ticker(0.01)
        ticker._reactor = server.reactor  # as if made inside a handler of this server
        tick = ticker.tick()  # due in 10 ms; registered only once awaited
        nap = rawsse.sleep(0.01)
        due = time.monotonic() + 0.01
        await wait_for(lambda: time.monotonic() > due)  # both past due before anyone waits
        with anyio.fail_after(2):
            await tick
        assert ticker.next_at <= time.monotonic()
        with anyio.fail_after(2):
            await nap  # outside the server's context: anyio.sleep, already past due


async def test_a_new_stream_on_a_kept_alive_connection_starts_a_fresh_sleep_schedule() -> None:
    # The lateness a stream's last sleep resumed with belongs to that stream's schedule: the
    # next request on the same connection (same task) must not have its first sleep shortened.
    state: dict[str, Any] = {}
    async with running_server(ticker_app(state)) as server:
        sock = blocking_socket(server.port)
        try:
            sock.sendall(get("/sleeps?n=1&first=0.05", close=False))
            await wait_for(lambda: "start" in state)
            # The loop stalls 0.4 s while the first stream sleeps: it resumes ~0.35 s late.
            await request(server.port, get("/block?s=0.4"))
            await read_to_chunked_end(sock)
            assert state["slept"][0] > 0.2  # it did resume late
            sock.sendall(get("/sleeps?n=1&first=0.2"))
            await read_to_chunked_end(
                sock, closed_early="the server closed the kept-alive connection"
            )
        finally:
            sock.close()
    assert len(state["slept"]) == 2
    assert state["slept"][1] >= 0.2 - CLOCK_TOLERANCE_S, state["slept"]
