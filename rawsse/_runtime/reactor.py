"""Shared I/O services for every connection of one server: one flusher, one socket watcher.

Contract: thousands of open streams must not mean thousands of tasks. Instead of a writer task,
a reader task and a timer per stream, a ``Reactor`` runs three tasks for the whole server:

1. The *flusher*. Writers append frames to a buffer and call ``schedule_flush``; the flusher
   wakes once per event-loop turn and writes each dirty buffer with one non-blocking ``send``.
   Frames produced in the same turn therefore go out coalesced, in one chunk and one syscall.
2. The *watcher*. Every connection's socket is registered, from accept to close, with one
   ``epoll`` object (``select.poll`` elsewhere). The reactor waits on the poller itself, and
   reports (a) a peer that reset (or an error: the connection is unusable) and, apart, a peer
   that ended its input (FIN, EPOLLRDHUP), so a stream can be cancelled even while it writes
   nothing, (b) writability of sockets whose send buffer was full, and (c) on Linux, the
   arrival of input (edge-triggered), so that a connection waiting for its next request parks
   on a ``Wakeup`` instead of registering with the event loop per request.
3. The *timer*. One heap of deadlines for every stream: heartbeats (a keep-alive frame after a
   silent interval), slow-client eviction checks, read deadlines and ``Ticker`` ticks. No timer
   task per stream. An entry fires never before its time and at most ``TIMER_SLACK_S`` after
   (ticks are at least that far apart, so entries due close together share one).

Watchers implement ``SocketWatch``: ``on_peer_gone()`` (then they are no longer watched),
``on_peer_eof()`` (still watched), ``on_writable()``, ``on_readable()``. Callbacks run
synchronously in the reactor task and must not block. What a connection needs of all this is
``ReactorLike``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import select
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Protocol

import anyio

from rawsse._errors import ClientDisconnected
from rawsse._runtime.backend import running_loop
from rawsse._runtime.transport import Transport, peer_closed
from rawsse._runtime.wakeup import Wakeup, new_wakeup

__all__ = ["Reactor", "ReactorLike", "SocketWatch", "Timed"]

_HAS_EPOLL = hasattr(select, "epoll")
if _HAS_EPOLL:
    _IN = select.EPOLLIN
    _OUT = select.EPOLLOUT
    # A reset or an error: the connection is unusable. EPOLLRDHUP alone is the peer's FIN.
    _GONE = select.EPOLLHUP | select.EPOLLERR
    _EOF = select.EPOLLRDHUP
    # Edge-triggered: input is reported when it arrives, once, so a socket with unread bytes
    # (a pipelined request while a handler runs) never makes the watcher spin.
    _WATCH_MASK = _GONE | _EOF | _IN | select.EPOLLET
else:  # pragma: no cover - exercised only off Linux
    _IN = select.POLLIN
    _OUT = select.POLLOUT
    _GONE = select.POLLHUP | select.POLLERR
    _EOF = 0  # told from data by peeking (``_dispatch``)
    _WATCH_MASK = _IN | _GONE

# Fallback poll() interval off Linux, where the poller itself cannot be awaited.
_POLL_INTERVAL_S = 0.05


class SocketWatch(Protocol):
    """What the reactor calls back for a registered socket."""

    @property
    def sock(self) -> Transport:
        """The socket watched."""

    def on_peer_gone(self) -> None:
        """The peer reset the connection (or it failed): nothing more can be sent."""

    def on_peer_eof(self) -> None:
        """The peer ended its input (a FIN); it may still read. Watching goes on."""

    def on_writable(self) -> None:
        """The socket can take more bytes."""

    def on_readable(self) -> None:
        """Bytes arrived (Linux only: see ``Reactor.edge_reads``)."""


class Flushable(Protocol):
    """A writer with buffered bytes to push to its socket."""

    def flush(self) -> None:
        """Write what is buffered without blocking."""


class Timed(Protocol):
    """Something the shared timer calls back when its time comes."""

    def on_timer(self, now: float) -> float | None:
        """Do what is due at ``now``; return when to be called next, or None."""


class ReactorLike(Protocol):
    """What a connection and its body writer use of the shared reactor. ``Reactor`` is the
    one a server runs; a test may hand the driver another (scripted input, a clock of its own).
    """

    # Whether ``on_readable`` reports input arriving (else readers wait on the event loop).
    edge_reads: bool

    def watch(self, target: SocketWatch) -> None:
        """Report ``target``'s socket events until ``unwatch``."""

    def unwatch(self, target: SocketWatch) -> None:
        """Stop reporting; call before the socket is closed."""

    def want_writable(self, target: SocketWatch, wanted: bool) -> None:
        """Turn reports of writability (``on_writable``) on or off."""

    def call_at(self, when: float, target: Timed) -> None:
        """Call ``target.on_timer(now)`` at monotonic time ``when``."""

    def schedule_flush(self, writer: Flushable) -> None:
        """Call ``writer.flush()`` once the running task yields to the event loop."""


# The reactor of the server whose task is running (``Server.serve`` sets it; connection tasks
# inherit it): how code inside a handler reaches the shared timer (``rawsse.Ticker``).
CURRENT_REACTOR: ContextVar[Reactor | None] = ContextVar("rawsse_reactor", default=None)

# Timer ticks are at least this far apart, so a timer fires never early and at most this late:
# those due within the slack of each other fire in the same tick, and 10,000 streams with
# heartbeats (or paced by ``Ticker``) wake the timer task a few hundred times a second, not
# 10,000 times.
TIMER_SLACK_S = 0.005


class Reactor:
    """The flusher and the socket watcher shared by all connections of a server."""

    # Whether input arrival is reported (``on_readable``); elsewhere readers wait on the loop.
    edge_reads = _HAS_EPOLL

    def __init__(self) -> None:
        self._dirty: list[Flushable] = []
        # Where the flusher task parks (trio; asyncio flushes from a loop callback) and where
        # the timer task parks between ticks: made by each task when it starts.
        self._flusher_wakeup: Wakeup | None = None
        self._call_soon: Callable[[Callable[[], None]], object] | None = None
        self._watched: dict[int, SocketWatch] = {}
        # Masks that differ from _WATCH_MASK (blocked writers, ignored input): few at a time,
        # so the common case costs no entry per connection.
        self._masks: dict[int, int] = {}
        self._poller: select.epoll | select.poll
        self._poller = select.epoll() if _HAS_EPOLL else select.poll()
        self.watched_count = 0
        self._timers: list[tuple[float, int, Timed]] = []
        self._timer_seq = itertools.count()
        self._timer_wakeup: Wakeup | None = None
        self._timer_next = math.inf
        # The maker of wake-ups for waits on this reactor's timer (``rawsse.sleep``, ``Ticker``):
        # made by the first such wait (the backend is known only inside a task), shared by all.
        self.wakeup_maker: Callable[[], Wakeup] | None = None

    # -- timer -----------------------------------------------------------------------------

    def call_at(self, when: float, target: Timed) -> None:
        """Call ``target.on_timer(now)`` at monotonic time ``when`` (and again as it asks)."""
        heapq.heappush(self._timers, (when, next(self._timer_seq), target))
        if when < self._timer_next:
            self._timer_next = when
            if self._timer_wakeup is not None:
                self._timer_wakeup.wake()  # nothing while the timer task runs: it looks again

    @property
    def timer_count(self) -> int:
        """Pending timer entries (heartbeats, eviction checks, read deadlines)."""
        return len(self._timers)

    def timer_targets(self) -> list[Timed]:
        """What the pending timer entries will call, soonest first (for inspection)."""
        return [target for _, _, target in sorted(self._timers)]

    def _fire_due(self, now: float) -> None:
        # (A method of its own: nothing it fired stays referenced by the timer task's frame
        # while it sleeps.)
        heap = self._timers
        rescheduled: list[tuple[float, Timed]] = []
        while heap and heap[0][0] <= now:
            _, _, target = heapq.heappop(heap)
            again = target.on_timer(now)
            if again is not None:
                rescheduled.append((again, target))
        # Pushed back only after the sweep: an entry that asks for a time already past
        # cannot be popped twice in one tick (no busy loop, whatever it asks).
        for when, target in rescheduled:
            heapq.heappush(heap, (max(when, now + 1e-6), next(self._timer_seq), target))

    async def _run_timer(self) -> None:
        heap = self._timers
        wakeup = self._timer_wakeup = new_wakeup()
        while True:
            now = time.monotonic()
            self._fire_due(now)
            self._timer_next = heap[0][0] if heap else math.inf
            # Sleeps until the earliest deadline (or until call_at() brings one forward), but
            # ticks at least the slack apart: entries never fire early, a lone one fires on
            # time, and under load all that fall due within a slack share one tick.
            delay = max(self._timer_next, now + TIMER_SLACK_S) - time.monotonic()
            if delay > 0:
                # (A parked task and a loop timer, not an Event in a cancel scope: no
                # cancellation, so no exception, per tick. Waits past a day are cut short:
                # the loop then just looks again.)
                await wakeup.park_for(min(delay, 86400.0))

    # -- flusher ---------------------------------------------------------------------------

    def schedule_flush(self, writer: Flushable) -> None:
        """Ask for ``writer.flush()`` once the current task yields to the event loop."""
        self._dirty.append(writer)
        if len(self._dirty) == 1:
            if self._call_soon is not None:
                self._call_soon(self._flush_dirty)
            elif self._flusher_wakeup is not None:
                self._flusher_wakeup.wake()  # nothing while it runs: it looks again

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, []
        for writer in dirty:
            writer.flush()

    async def _run_flusher(self) -> None:
        loop = running_loop()
        if loop is not None:
            # asyncio: a callback in the loop's ready queue runs after the tasks that are ready
            # now, exactly like a task wake-up but without the event and task switch it costs.
            self._call_soon = loop.call_soon
            if self._dirty:
                self._call_soon(self._flush_dirty)
            return
        self._call_soon = None  # trio: the flusher task below
        wakeup = self._flusher_wakeup = new_wakeup()
        while True:
            if not self._dirty:
                # No deadline: this task lives as long as the server and is cancelled with it.
                await wakeup.park()
            self._flush_dirty()

    # -- watcher ---------------------------------------------------------------------------

    def watch(self, target: SocketWatch) -> None:
        """Report ``target``'s peer going away until ``unwatch``.

        On Linux hang-ups (EPOLLRDHUP is a FIN, EPOLLHUP/ERR a reset) and, edge-triggered, the
        arrival of input are reported: one registration serves the connection's whole life.
        Elsewhere readability is watched and peeked at to tell EOF from data.
        """
        fd = target.sock.fileno()
        self._watched[fd] = target
        self._masks.pop(fd, None)
        self._poller.register(fd, _WATCH_MASK)
        self.watched_count = len(self._watched)

    def unwatch(self, target: SocketWatch) -> None:
        """Stop watching ``target``; call before its socket is closed."""
        fd = target.sock.fileno()
        if fd < 0 or self._watched.get(fd) is not target:
            return
        del self._watched[fd]
        self._masks.pop(fd, None)
        with contextlib.suppress(OSError, KeyError):  # already gone with its socket
            self._poller.unregister(fd)
        self.watched_count = len(self._watched)

    def want_writable(self, target: SocketWatch, wanted: bool) -> None:
        """Turn reports of writability for ``target`` on or off."""
        fd = target.sock.fileno()
        if self._watched.get(fd) is not target:
            return
        mask = self._masks.get(fd, _WATCH_MASK)
        new_mask = (mask | _OUT) if wanted else (mask & ~_OUT)
        if new_mask != mask:
            self._set_mask(fd, new_mask)

    def _set_mask(self, fd: int, mask: int) -> None:
        if mask == _WATCH_MASK:
            self._masks.pop(fd, None)
        else:
            self._masks[fd] = mask
        self._poller.modify(fd, mask)

    def _ignore_input(self, fd: int) -> None:
        # Off Linux: the peer sent bytes (a pipelined request): stop reporting readability,
        # which is level-triggered there and would spin, but keep reporting hang-ups.
        self._set_mask(fd, self._masks.get(fd, _WATCH_MASK) & ~_IN)

    def _dispatch(self, events: list[tuple[int, int]]) -> None:
        for fd, mask in events:
            target = self._watched.get(fd)
            if target is None:
                continue
            if mask & _GONE:
                self.unwatch(target)
                target.on_peer_gone()
                continue
            if mask & _EOF:
                target.on_peer_eof()  # still watched: a reset may follow
            if mask & _IN:
                if _HAS_EPOLL:
                    target.on_readable()
                elif not self._report_input_off_linux(fd, target):  # pragma: no cover
                    continue
            if mask & _OUT:
                target.on_writable()

    def _report_input_off_linux(self, fd: int, target: SocketWatch) -> bool:  # pragma: no cover
        # Readability is level-triggered here: peek to tell a FIN or a reset from data, and
        # stop reporting input either way (it would spin), but keep reporting hang-ups.
        try:
            eof = peer_closed(target.sock)
        except ClientDisconnected:
            self.unwatch(target)
            target.on_peer_gone()
            return False
        self._ignore_input(fd)
        if eof:
            target.on_peer_eof()
        return True

    async def _run_watcher(self) -> None:
        poller = self._poller
        if _HAS_EPOLL:
            epoll = poller
            assert isinstance(epoll, select.epoll)
            loop = running_loop()
            if loop is not None:
                # asyncio: one persistent reader callback, no add/remove per wake-up.
                fd = epoll.fileno()
                loop.add_reader(fd, lambda: self._dispatch(epoll.poll(0, 4096)))
                try:
                    await anyio.sleep_forever()
                finally:
                    loop.remove_reader(fd)
            while True:
                # No deadline: woken by socket activity, cancelled with the server.
                await anyio.wait_readable(epoll.fileno())
                self._dispatch(epoll.poll(0, 4096))
        else:  # pragma: no cover - off Linux
            assert isinstance(poller, select.poll)
            while True:
                await anyio.sleep(_POLL_INTERVAL_S)
                self._dispatch(poller.poll(0))

    async def run(self) -> None:
        """Run the flusher, the watcher and the timer until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._run_flusher)
                tg.start_soon(self._run_watcher)
                tg.start_soon(self._run_timer)
        finally:
            if _HAS_EPOLL:
                self._poller.close()  # type: ignore[union-attr]
