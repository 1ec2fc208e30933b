"""Reading and writing bench's non-blocking sockets with as few loop operations as possible.

Contract: ``Readiness.open(sock)`` (inside a running event loop) returns an object whose
``wait()`` returns once ``sock`` may be read, ``consumed()`` is called after each read that
returned data, and ``close()`` is called when the exchange is over (before the socket is pooled
or closed). ``send_all(sock, data)`` writes all of ``data``.

Why: ``anyio.wait_readable`` on asyncio adds a reader to the loop and removes it again on every
wait: two ``epoll_ctl`` calls, a future and anyio's bookkeeping per read. A server that writes
one event at a time makes bench read once per few events, and then those waits were over a
third of bench's time. On asyncio (and uvloop) the socket's reader is therefore registered once
per exchange and its callback wakes the waiting task; on trio, whose wait is one ``epoll_ctl``,
``anyio.wait_readable`` stays.

The asyncio selector is level-triggered: while unread bytes are queued the callback runs on
every loop pass, which only sets a flag; ``consumed()`` clears it after a read, and if bytes are
still queued the next pass sets it again, so no wake-up is lost.
"""

from __future__ import annotations

import asyncio
import socket

from rawsse.client_conn import wait_readable, wait_writable

__all__ = ["Readiness", "send_all"]


class Readiness:
    """Readiness of one socket for reading, for one exchange (see the module contract)."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    @staticmethod
    def open(sock: socket.socket) -> Readiness:
        """The cheapest readiness waiter for the running event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: trio
            return Readiness(sock)
        return _LoopReadiness(sock, loop)

    async def wait(self) -> None:
        """Return once the socket may be read (or has reached EOF or an error)."""
        await wait_readable(self._sock)

    def consumed(self) -> None:
        """A read returned data."""

    def close(self) -> None:
        """The exchange is over: stop watching the socket."""


class _LoopReadiness(Readiness):
    """asyncio: one ``add_reader`` per exchange; the callback wakes the waiting task."""

    __slots__ = ("_fd", "_loop", "_ready", "_waiter")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(sock)
        self._loop = loop
        self._fd = sock.fileno()
        self._ready = False
        self._waiter: asyncio.Future[None] | None = None
        loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        self._ready = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Return once the socket may be read (or has reached EOF or an error)."""
        if self._ready:
            return
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def consumed(self) -> None:
        """A read returned data: wait for the loop to see more."""
        self._ready = False

    def close(self) -> None:
        """The exchange is over: stop watching the socket."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._fd = -1


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
