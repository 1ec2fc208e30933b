"""Reading and writing bench's non-blocking sockets with as few loop operations as possible.

Contract: ``Readiness.open(sock)`` (inside a running event loop) returns an object whose
``wait()`` returns once ``sock`` may be read, ``consumed()`` is called after each read that
returned data, ``park()`` when an exchange is over and the connection goes back to the pool,
``resume()`` before the next exchange on it, and ``close()`` before the socket is closed.
``send_all(sock, data)`` writes all of ``data``.

Why: ``anyio.wait_readable`` on asyncio adds a reader to the loop and removes it again on every
wait: two ``epoll_ctl`` calls, a future and anyio's bookkeeping per read. A server that writes
one event at a time makes bench read once per few events, and then those waits were over a
third of bench's time. On asyncio (and uvloop) the socket's reader is therefore registered once
per connection, for all the keep-alive exchanges it carries (add and remove per exchange were
still a quarter of bench's time on 16-event streams), and its callback wakes the waiting task;
on trio, whose wait is one ``epoll_ctl``, trio's own ``wait_readable`` is called (without
anyio's dispatch in between).

A parked connection stays registered. If it turns readable while parked (the server closed it,
or wrote out of turn) its reader is removed at once: the level-triggered selector would
otherwise call it on every loop pass until the connection is used again. ``resume()`` adds it
back, and the readiness seen is kept, so the next read finds the EOF or the stray bytes.

The asyncio selector is level-triggered: while unread bytes are queued the callback runs on
every loop pass, which only sets a flag; ``consumed()`` clears it after a read, and if bytes are
still queued the next pass sets it again, so no wake-up is lost.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from rawsse._runtime.backend import running_loop
from rawsse.client._connection import wait_readable, wait_writable

__all__ = ["Readiness", "send_all"]


class Readiness:
    """Readiness of one socket for reading, for its whole life (see the module contract)."""

    __slots__ = ("_sock", "_wait")

    def __init__(self, sock: socket.socket, wait: Callable[[socket.socket], Awaitable[None]]):
        self._sock = sock
        self._wait = wait

    @staticmethod
    def open(sock: socket.socket) -> Readiness:
        """The cheapest readiness waiter for the running event loop."""
        loop = running_loop()
        if loop is None:  # not asyncio: trio
            return Readiness(sock, _trio_wait_readable())
        return _LoopReadiness(sock, loop)

    @property
    def ready(self) -> bool:
        """Whether the socket is known to be readable now (so ``wait`` may be skipped)."""
        return False

    def wait(self) -> Awaitable[None]:
        """Something to await until the socket may be read (or has reached EOF or an error);
        not a coroutine of its own, so waiting adds no frame to the await chain."""
        return self._wait(self._sock)

    def consumed(self) -> None:
        """A read returned data."""

    def park(self) -> None:
        """The exchange is over; the connection waits in the pool for the next one."""

    def resume(self) -> None:
        """A new exchange starts on this connection."""

    def close(self) -> None:
        """The socket is about to be closed: stop watching it."""


def _trio_wait_readable() -> Callable[[socket.socket], Awaitable[None]]:
    """trio's ``wait_readable`` itself (anyio's adds a backend lookup per call)."""
    try:
        import trio
    except ImportError:  # pragma: no cover - another anyio backend
        return wait_readable
    wait: Callable[[socket.socket], Awaitable[None]] = trio.lowlevel.wait_readable
    return wait


class _LoopReadiness(Readiness):
    """asyncio: one ``add_reader`` per connection; the callback wakes the waiting task."""

    __slots__ = ("_fd", "_loop", "_parked", "_ready", "_registered", "_waiter")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(sock, wait_readable)
        self._loop = loop
        self._fd = sock.fileno()
        self._ready = False
        self._parked = False
        self._waiter: asyncio.Future[None] | None = None
        loop.add_reader(self._fd, self._on_readable)
        self._registered = True

    def _on_readable(self) -> None:
        self._ready = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # else its task was cancelled
                waiter.set_result(None)
        elif self._parked:  # level-triggered: it would be called again on every pass
            self._loop.remove_reader(self._fd)
            self._registered = False

    @property
    def ready(self) -> bool:
        """Whether the loop has seen the socket readable since the last read."""
        return self._ready

    def wait(self) -> Awaitable[None]:
        """A future that the readable callback completes (done already if it was seen)."""
        waiter = self._loop.create_future()
        if self._ready:
            waiter.set_result(None)
        else:
            self._waiter = waiter
        return waiter

    def consumed(self) -> None:
        """A read returned data: wait for the loop to see more."""
        self._ready = False

    def park(self) -> None:
        """The exchange is over; the reader stays registered until the connection is closed,
        or until it turns readable while parked."""
        self._parked = True

    def resume(self) -> None:
        """A new exchange starts: watch the socket again if parking stopped it."""
        self._parked = False
        if not self._registered:
            self._loop.add_reader(self._fd, self._on_readable)
            self._registered = True

    def close(self) -> None:
        """The socket is about to be closed: stop watching it."""
        if self._registered:
            self._loop.remove_reader(self._fd)
            self._registered = False


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Write all of ``data`` to the non-blocking ``sock``, waiting while its buffer is full."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await wait_writable(sock)
            continue
        view = view[sent:]
