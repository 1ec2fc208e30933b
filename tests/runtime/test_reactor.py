"""The shared reactor on its own: its timer, its flusher and its socket watcher, both backends,
over real loopback TCP connections."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from rawsse._runtime.reactor import TIMER_SLACK_S, Reactor
from tests.support import reset_close, tcp_pair, wait_for

pytestmark = pytest.mark.anyio

# A timer entry fires never early; this only absorbs float rounding between clock readings.
CLOCK_TOLERANCE_S = 1e-4


@asynccontextmanager
async def running_reactor() -> AsyncIterator[Reactor]:
    reactor = Reactor()
    async with anyio.create_task_group() as tg:
        tg.start_soon(reactor.run)
        try:
            yield reactor
        finally:
            tg.cancel_scope.cancel()


class Entry:
    """A timer entry that records when it fired and asks to be called again ``again`` times."""

    def __init__(self, due: float, *, again: int = 0, step_s: float = 0.01) -> None:
        self.due = due
        self.again = again
        self.step_s = step_s
        self.fired: list[float] = []

    def on_timer(self, now: float) -> float | None:
        self.fired.append(time.monotonic())
        if self.again:
            self.again -= 1
            self.due = now + self.step_s
            return self.due
        return None


class Watched:
    """A socket watch that records the reactor's reports."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.reports: list[str] = []

    @property
    def sock(self) -> socket.socket:
        return self._sock

    def on_peer_gone(self) -> None:
        self.reports.append("gone")

    def on_peer_eof(self) -> None:
        self.reports.append("eof")

    def on_writable(self) -> None:
        self.reports.append("writable")

    def on_readable(self) -> None:
        self.reports.append("readable")


class Writer:
    def __init__(self) -> None:
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


# -- timer ------------------------------------------------------------------------------------


async def test_entries_fire_in_order_never_early() -> None:
    async with running_reactor() as reactor:
        start = time.monotonic()
        entries = [Entry(start + delay) for delay in (0.05, 0.01, 0.03, 0.011, 0.0)]
        for entry in entries:
            reactor.call_at(entry.due, entry)
        await wait_for(lambda: all(e.fired for e in entries))
    for entry in entries:
        assert entry.fired[0] >= entry.due - CLOCK_TOLERANCE_S
    order = sorted(entries, key=lambda e: e.fired[0])
    assert [e.due for e in order] == sorted(e.due for e in entries)
    assert reactor.timer_count == 0


async def test_an_entry_is_called_again_when_it_asks() -> None:
    async with running_reactor() as reactor:
        entry = Entry(time.monotonic() + 0.01, again=3)
        reactor.call_at(entry.due, entry)
        await wait_for(lambda: len(entry.fired) == 4)
        assert reactor.timer_count == 0
    gaps = [b - a for a, b in itertools.pairwise(entry.fired)]
    assert all(gap >= 0.01 - CLOCK_TOLERANCE_S for gap in gaps)


async def test_an_entry_asking_for_a_past_time_is_not_called_twice_in_one_tick() -> None:
    calls: list[float] = []

    class Eager:
        def on_timer(self, now: float) -> float | None:
            calls.append(now)
            return now - 1 if len(calls) < 5 else None  # always "overdue"

    async with running_reactor() as reactor:
        reactor.call_at(time.monotonic(), Eager())
        await wait_for(lambda: len(calls) == 5)
    # One call per tick, and ticks are at least the slack apart: no busy loop.
    assert all(b > a for a, b in itertools.pairwise(calls))
    assert calls[-1] - calls[0] >= 4 * TIMER_SLACK_S - CLOCK_TOLERANCE_S


async def test_an_earlier_entry_wakes_a_sleeping_timer() -> None:
    async with running_reactor() as reactor:
        late = Entry(time.monotonic() + 30)
        reactor.call_at(late.due, late)  # the timer now sleeps for 30 s
        await anyio.lowlevel.checkpoint()
        soon = Entry(time.monotonic() + 0.01)
        reactor.call_at(soon.due, soon)
        await wait_for(lambda: soon.fired, timeout_s=5)
        assert not late.fired
        assert reactor.timer_targets() == [late]


# -- flusher ----------------------------------------------------------------------------------


async def test_flush_runs_once_the_task_yields() -> None:
    async with running_reactor() as reactor:
        await anyio.lowlevel.checkpoint()  # (the flusher has started)
        writers = [Writer(), Writer()]
        for writer in writers:
            reactor.schedule_flush(writer)
        assert [w.flushes for w in writers] == [0, 0]  # never from inside schedule_flush
        await wait_for(lambda: all(w.flushes for w in writers))
        assert [w.flushes for w in writers] == [1, 1]


async def test_a_flush_scheduled_before_the_flusher_starts_is_not_lost() -> None:
    reactor = Reactor()
    writer = Writer()
    reactor.schedule_flush(writer)
    async with anyio.create_task_group() as tg:
        tg.start_soon(reactor.run)
        await wait_for(lambda: writer.flushes == 1)
        tg.cancel_scope.cancel()


# -- watcher ----------------------------------------------------------------------------------


async def test_input_then_fin_then_reset_are_reported_in_turn() -> None:
    server, client = tcp_pair()
    watched = Watched(server)
    try:
        async with running_reactor() as reactor:
            reactor.watch(watched)
            assert reactor.watched_count == 1
            client.sendall(b"hello")
            await wait_for(lambda: "readable" in watched.reports)
            client.shutdown(socket.SHUT_WR)
            await wait_for(lambda: "eof" in watched.reports)
            assert "gone" not in watched.reports
            assert reactor.watched_count == 1  # a FIN leaves it watched: a reset may follow
            assert server.recv(100) == b"hello"
            reset_close(client)
            await wait_for(lambda: "gone" in watched.reports)
            assert reactor.watched_count == 0
    finally:
        server.close()


async def test_writability_is_reported_only_while_wanted() -> None:
    server, client = tcp_pair()
    watched = Watched(server)
    try:
        async with running_reactor() as reactor:
            reactor.watch(watched)
            reactor.want_writable(watched, True)
            await wait_for(lambda: "writable" in watched.reports)
            reactor.want_writable(watched, False)
            count = watched.reports.count("writable")
            client.sendall(b"x")  # another report comes: input
            await wait_for(lambda: "readable" in watched.reports)
            assert watched.reports.count("writable") == count
    finally:
        server.close()
        client.close()


async def test_unwatched_sockets_are_not_reported() -> None:
    server, client = tcp_pair()
    other_server, other_client = tcp_pair()
    watched, witness = Watched(server), Watched(other_server)
    try:
        async with running_reactor() as reactor:
            reactor.watch(watched)
            reactor.watch(witness)
            reactor.unwatch(watched)
            reactor.unwatch(watched)  # twice: harmless
            assert reactor.watched_count == 1
            client.sendall(b"x")
            reset_close(client)
            other_client.sendall(b"y")  # reported after whatever the first socket did
            await wait_for(lambda: "readable" in witness.reports)
            assert watched.reports == []
    finally:
        for sock in (server, other_server, other_client):
            sock.close()
