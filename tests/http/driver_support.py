"""The connection driver with scripted bytes: no socket, no real clock, no sleeps.

``Connection`` talks to its peer through a ``Transport`` and to the server through the
reactor's reports (``ReactorLike``); both are stood in for here, the way httpcore's mock
backend stands in for a network:

- ``MemoryTransport`` is the peer: the bytes a test feeds are what ``recv`` returns, what the
  driver sends is collected, and the peer can end its input (FIN) or reset.
- ``ScriptedReactor`` reports what the test does (input arriving, FIN, reset) as the real
  reactor would, flushes body writers once the driver's task yields, and keeps a clock that
  moves only when the test says so (``advance``), firing the deadlines that fall due.

``Driven`` puts the two around one ``Connection`` of a real ``App`` and runs it; ``exchange``
is the one-shot form: these bytes in, then the end of input, and every byte the driver answered.
"""

from __future__ import annotations

import heapq
import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from rawsse._http.connection import Connection, ConnectionContext, Handler
from rawsse._http.limits import ServerLimits
from tests.support import IO_TIMEOUT_S, wait_for


class MemoryTransport:
    """The peer of a driven connection (satisfies ``rawsse._runtime.transport.Transport``)."""

    def __init__(self) -> None:
        self.inbound = bytearray()
        self.eof = False  # the peer ended its input
        self.reset = False  # the peer reset the connection
        self.sent = bytearray()
        self.write_closed = False  # the driver half-closed
        self.closed = False

    def fileno(self) -> int:
        return -1 if self.closed else 1_000_000  # never a real descriptor

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        if self.reset:
            raise ConnectionResetError("reset by the peer")
        if not self.inbound:
            if self.eof:
                return b""
            raise BlockingIOError
        data = bytes(self.inbound[:bufsize])
        if not flags & socket.MSG_PEEK:
            del self.inbound[:bufsize]
        return data

    def send(self, data: Any, flags: int = 0, /) -> int:
        if self.reset or self.closed:
            raise BrokenPipeError("the peer is gone")
        self.sent += data
        return len(data)

    def shutdown(self, how: int, /) -> None:
        self.write_closed = True

    def close(self) -> None:
        self.closed = True


class ScriptedReactor:
    """The reactor as the driver sees it (``ReactorLike``), on a clock the test moves."""

    edge_reads = True

    def __init__(self) -> None:
        self.now = 1000.0
        self.watched: set[Any] = set()
        self._timers: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._dirty: list[Any] = []
        self._wake = anyio.Event()

    def clock(self) -> float:
        return self.now

    def watch(self, target: Any) -> None:
        self.watched.add(target)

    def unwatch(self, target: Any) -> None:
        self.watched.discard(target)

    def want_writable(self, target: Any, wanted: bool) -> None:
        pass  # a MemoryTransport takes every byte at once: never blocked

    def call_at(self, when: float, target: Any) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), target))

    def pending(self, target: Any) -> bool:
        """Whether ``target`` has a deadline in the timer."""
        return any(entry[2] is target for entry in self._timers)

    def schedule_flush(self, writer: Any) -> None:
        self._dirty.append(writer)
        self._wake.set()

    async def run_flusher(self) -> None:
        while True:  # cancelled with the test's task group
            await self._wake.wait()
            self._wake = anyio.Event()
            dirty, self._dirty = self._dirty, []
            for writer in dirty:
                writer.flush()

    def advance(self, seconds: float) -> None:
        """Move the clock on and fire what falls due (as the shared timer would)."""
        self.now += seconds
        heap = self._timers
        again = []
        while heap and heap[0][0] <= self.now:
            _, _, target = heapq.heappop(heap)
            when = target.on_timer(self.now)
            if when is not None:
                again.append((when, target))
        for when, target in again:
            self.call_at(when, target)


class Driven:
    """One ``Connection`` of ``handler``, driven in memory."""

    def __init__(self, handler: Handler, **limits: Any) -> None:
        self.reactor = ScriptedReactor()
        self.transport = MemoryTransport()
        self.context = ConnectionContext(
            handler,
            ServerLimits(**limits),
            self.reactor,
            access_log=False,
            clock=self.reactor.clock,
        )
        self.connection = Connection(self.transport, ("192.0.2.1", 50000), self.context)

    # -- what the peer does --

    def feed(self, data: bytes) -> None:
        """Bytes arrive from the client."""
        self.transport.inbound += data
        self.connection.on_readable()

    def finish(self) -> None:
        """The client ends its input (FIN)."""
        self.transport.eof = True
        self.connection.on_peer_eof()

    def reset(self) -> None:
        """The client resets the connection."""
        self.transport.reset = True
        self.connection.on_peer_gone()

    # -- what the test observes --

    @property
    def sent(self) -> bytes:
        return bytes(self.transport.sent)

    @property
    def parked(self) -> bool:
        """Whether the connection waits for input with a deadline in the timer."""
        return self.reactor.pending(self.connection) and self.connection in self.reactor.watched

    async def wait_sent(self, marker: bytes) -> bytes:
        await wait_for(lambda: marker in self.transport.sent, what=f"{marker!r} sent")
        return self.sent

    async def wait_parked(self) -> None:
        await wait_for(lambda: self.parked, what="the connection waiting for input")

    async def wait_closed(self) -> bytes:
        await wait_for(lambda: self.transport.closed, what="the connection closed")
        return self.sent


@asynccontextmanager
async def driven(handler: Handler, **limits: Any) -> AsyncIterator[Driven]:
    """Run a driven connection for the block (cancelled after it, if still open)."""
    connection = Driven(handler, **limits)
    with anyio.fail_after(IO_TIMEOUT_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(connection.reactor.run_flusher)
            tg.start_soon(connection.connection.run)
            yield connection
            tg.cancel_scope.cancel()


async def exchange(handler: Handler, data: bytes, **limits: Any) -> bytes:
    """Everything the driver answers to ``data`` followed by the end of input."""
    async with driven(handler, **limits) as connection:
        connection.feed(data)
        connection.finish()
        return await connection.wait_closed()
