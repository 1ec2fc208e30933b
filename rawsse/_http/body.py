"""A streaming response body: buffered, coalesced, chunk-framed, with backpressure.

Contract: ``write(data)`` never blocks and never yields: it appends to a per-connection
buffer and asks the reactor to flush it once the producer yields to the event loop. Everything
written in the same loop turn goes out as ONE chunk in ONE ``send``. ``await drain()`` is the
backpressure point: it waits (up to the send timeout) until the socket has taken enough of the
buffer. Writing to a peer that is gone raises ``ClientDisconnected``; a peer that takes nothing
for the send timeout raises ``SlowClientEvicted``.

A producer that never awaits anything (a tight loop of writes) would buffer without bound, so
``write`` reports ``should_drain`` once the buffer passes its high-water mark and the stream
layer awaits ``drain()`` then.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Protocol

import anyio

from rawsse._errors import ClientDisconnected, SlowClientEvicted
from rawsse._runtime.reactor import TIMER_SLACK_S, ReactorLike, SocketWatch
from rawsse._runtime.scopes import CancelScopeLike
from rawsse._runtime.transport import Transport, send_now

__all__ = ["BodyWriter"]


# A write this long after the previous one goes straight to the socket (see ``write``).
_WRITE_THROUGH_AFTER_S = 0.002


class SentCounter(Protocol):
    """Anything counting bytes sent (the server's stats)."""

    bytes_sent: int


@functools.cache
def _hard_cap(high_water_bytes: int) -> int:
    # One int object for every writer with the same high-water mark (memory per held stream).
    return 16 * high_water_bytes


class _EvictionCheck:
    """A one-shot timer entry: evict the writer if it is still blocked past the send timeout."""

    __slots__ = ("writer",)

    def __init__(self, writer: BodyWriter) -> None:
        self.writer = writer

    def on_timer(self, now: float) -> float | None:
        writer = self.writer
        since = writer.blocked_since
        if not writer.closed and since is not None and now - since >= writer.send_timeout_s:
            writer.evict()
        return None


class BodyWriter:
    """The body of one streaming response on one connection."""

    __slots__ = (
        "_drained",
        "_pending",
        "_pending_bytes",
        "_prefix",
        "_reactor",
        "_scheduled",
        "_unsent",
        "_watching_writable",
        "blocked_since",
        "bytes_sent",
        "cancel_scope",
        "chunked",
        "closed",
        "evicted",
        "finishing",
        "high_water_bytes",
        "keepalive_frame",
        "keepalive_interval_s",
        "last_write_s",
        "max_buffer_bytes",
        "on_keepalive",
        "send_blocked_s",
        "send_timeout_s",
        "sock",
        "totals",
        "watch",
    )

    def __init__(
        self,
        sock: Transport,
        reactor: ReactorLike,
        watch: SocketWatch,
        *,
        chunked: bool,
        high_water_bytes: int,
        send_timeout_s: float,
        totals: SentCounter | None = None,
        prefix: bytes = b"",
    ) -> None:
        self.sock = sock
        self._reactor = reactor
        # The object registered with the reactor for this socket (the connection).
        self.watch = watch
        self.chunked = chunked
        self.high_water_bytes = high_water_bytes
        self.send_timeout_s = send_timeout_s
        # Server-wide counters that also get every byte sent (an attribute, not a callback:
        # this runs once per send).
        self.totals = totals
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # What the socket refused, waiting for it to take more: a shared empty bytes until
        # then (most streams never fill their socket), a bytearray of their own once it does.
        self._unsent: bytes | bytearray = b""
        # Sent unframed before the first chunk (the response head).
        self._prefix = prefix
        self._scheduled = False
        self._watching_writable = False
        self._drained: anyio.Event | None = None
        self.closed = False
        self.evicted = False
        # Set once the terminator is queued (``finish``): no frame may follow it.
        self.finishing = False
        # The scope the body is written in: cancelling it ends the producer (shutdown, lifetime).
        self.cancel_scope: CancelScopeLike | None = None
        # A frame written after ``keepalive_interval_s`` of silence (the SSE heartbeat).
        self.keepalive_frame = b""
        self.keepalive_interval_s = 0.0
        self.on_keepalive: Callable[[], None] | None = None
        # Pushed writes (broadcast) beyond this many buffered bytes evict the client at once.
        self.max_buffer_bytes = _hard_cap(high_water_bytes)
        if prefix:
            # The head goes out at the producer's first pause, with whatever it wrote by then:
            # never later (a silent producer must not hold the client's headers back).
            self._scheduled = True
            reactor.schedule_flush(self)
        # Monotonic time the socket last refused bytes we had for it; None when not blocked.
        self.blocked_since: float | None = None
        self.last_write_s = time.monotonic()
        self.bytes_sent = 0
        self.send_blocked_s = 0.0

    # -- keep-alive and eviction timers ----------------------------------------------------

    def enable_keepalive(
        self, frame: bytes, interval_s: float, on_sent: Callable[[], None] | None = None
    ) -> None:
        """Write ``frame`` whenever nothing was written for ``interval_s`` (0 = never)."""
        if interval_s <= 0:
            return
        self.keepalive_frame = frame
        self.keepalive_interval_s = interval_s
        self.on_keepalive = on_sent
        self._reactor.call_at(self.last_write_s + interval_s, self)

    def on_timer(self, now: float) -> float | None:
        """Reactor timer: evict a client blocked too long; send a heartbeat when silent."""
        if self.closed or self.finishing:
            # Finishing: the terminator may be out already and the connection not yet moved
            # on; a heartbeat now would land after it. (A blocked terminator's eviction is its
            # own timer entry, ``_EvictionCheck``.)
            return None
        blocked_since = self.blocked_since
        if blocked_since is not None and now - blocked_since >= self.send_timeout_s:
            self.evict()
            return None
        interval = self.keepalive_interval_s
        due = self.last_write_s + interval
        if due > now + TIMER_SLACK_S:
            return due  # data was written meanwhile: the silence starts later
        if blocked_since is None:
            self.write(self.keepalive_frame)
            if self.on_keepalive is not None:
                self.on_keepalive()
        else:
            self.last_write_s = now  # a blocked socket gains nothing from another heartbeat
        return now + interval

    def evict(self) -> None:
        """Drop a client that does not read: close the body and cancel its handler."""
        if self.closed:
            return
        self.evicted = True
        self.watch.on_peer_gone()
        self.close()

    def push(self, data: bytes) -> None:
        """Queue ``data`` without backpressure (fan-out); evicts the client past the hard cap."""
        if self.closed or self.finishing:
            return
        self.write(data)
        if self.buffered_bytes > self.max_buffer_bytes:
            self.evict()

    # -- producing -------------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Queue ``data`` for sending; returns True when the caller should ``await drain()``."""
        if self.closed:
            raise ClientDisconnected("the client has gone; the stream cannot be written")
        if not self._scheduled:
            now = time.monotonic()
            # Nothing is queued (no flush is scheduled, so no head or frames are pending) and
            # the socket refused nothing (refused bytes always mean writability is watched).
            if now - self.last_write_s > _WRITE_THROUGH_AFTER_S and not self._watching_writable:
                # A frame after a pause (a paced token, a heartbeat) has nothing to coalesce
                # with: send it now rather than pay for a flush turn. Frames that follow within
                # the same moment are queued behind it and coalesced as usual. (``_send``,
                # inlined: this is the per-event path of a paced stream.)
                self.last_write_s = now
                payload = b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data
                try:
                    sent = send_now(self.sock, payload)
                except ClientDisconnected:
                    self._lost()
                    return False
                if sent:
                    self.bytes_sent += sent
                    totals = self.totals
                    if totals is not None:
                        totals.bytes_sent += sent
                if sent < len(payload):
                    self._keep_unsent(memoryview(payload)[sent:])
                    self._block()
                return False
            self._scheduled = True
            self._reactor.schedule_flush(self)
        self._pending.append(data)
        self._pending_bytes += len(data)
        return self._pending_bytes + len(self._unsent) > self.high_water_bytes

    def write_last(self, data: bytes) -> None:
        """Queue the body's closing frames (a farewell, an error frame): never sent on their
        own, but with the terminator ``finish`` adds, in one chunk and one ``send``. Nothing
        else (heartbeats, fan-out pushes) is written after them."""
        if self.closed:
            raise ClientDisconnected("the client has gone; the stream cannot be written")
        self.finishing = True
        self._pending.append(data)
        self._pending_bytes += len(data)

    @property
    def buffered_bytes(self) -> int:
        """Bytes accepted by ``write`` that the socket has not taken yet."""
        return self._pending_bytes + len(self._unsent) + len(self._prefix)

    async def drain(self, target_bytes: int | None = None) -> None:
        """Wait until at most ``target_bytes`` (default: half the high-water mark) are buffered.

        Raises ``SlowClientEvicted`` if the peer takes nothing for the send timeout, and
        ``ClientDisconnected`` if it goes away meanwhile.
        """
        self.flush()
        target = self.high_water_bytes // 2 if target_bytes is None else target_bytes
        started = time.monotonic()
        try:
            while self.buffered_bytes > target:
                if self.closed:
                    raise ClientDisconnected("the client has gone; the stream cannot be written")
                event = self._drained = anyio.Event()
                remaining = self.send_timeout_s - (time.monotonic() - started)
                with anyio.move_on_after(remaining) as scope:
                    await event.wait()
                if scope.cancelled_caught:
                    self.evict()
                    raise SlowClientEvicted(
                        f"client took no data for {self.send_timeout_s:g} s; evicted"
                    )
        finally:
            self._drained = None
            self.send_blocked_s += time.monotonic() - started
        if self.closed and self.buffered_bytes:
            raise ClientDisconnected("the client has gone; the stream cannot be written")

    # -- flushing (called by the reactor) --------------------------------------------------

    def flush(self, terminator: bytes = b"") -> None:
        """Frame what is pending (after the prefix, before ``terminator``) and send as much as
        the socket takes now, without waiting: one ``send`` however many frames were queued."""
        self._scheduled = False
        if self.closed:
            return
        payload = b""
        if self._pending:
            pending = self._pending
            payload = b"".join(pending) if len(pending) > 1 else pending[0]
            pending.clear()
            self._pending_bytes = 0
            if self.chunked:
                payload = b"%x\r\n%b\r\n" % (len(payload), payload)
            # The frames are handed to the socket now: the silence (for heartbeats) starts here.
            self.last_write_s = time.monotonic()
        if self._prefix:
            payload = self._prefix + payload
            self._prefix = b""
        if terminator:
            payload += terminator
        if payload:
            if not self._unsent and not self._watching_writable:
                self._send(payload)
                return
            self._keep_unsent(payload)
        if self._unsent and not self._watching_writable:
            self._send_unsent()

    def _send(self, payload: bytes) -> None:
        try:
            sent = send_now(self.sock, payload)
        except ClientDisconnected:
            self._lost()
            return
        if sent:  # _count, inlined: this is the per-event path of a paced stream
            self.bytes_sent += sent
            totals = self.totals
            if totals is not None:
                totals.bytes_sent += sent
        if sent < len(payload):
            self._keep_unsent(memoryview(payload)[sent:])
            self._block()

    def _keep_unsent(self, data: bytes | memoryview) -> None:
        unsent = self._unsent
        if isinstance(unsent, bytearray):
            unsent += data
        else:
            self._unsent = bytearray(data)

    def _send_unsent(self) -> None:
        unsent = self._unsent
        if not isinstance(unsent, bytearray):  # nothing was refused
            self._unblock()
            return
        try:
            sent = send_now(self.sock, unsent)
        except ClientDisconnected:
            self._lost()
            return
        self._count(sent)
        del unsent[:sent]
        if unsent:
            self._block()
        else:
            self._unsent = b""  # the buffer's memory goes back now, not at the next backlog
            self._unblock()

    def _count(self, sent: int) -> None:
        if sent:
            self.bytes_sent += sent
            totals = self.totals
            if totals is not None:
                totals.bytes_sent += sent

    def _block(self) -> None:
        if self.blocked_since is None:
            self.blocked_since = now = time.monotonic()
            self._reactor.call_at(now + self.send_timeout_s, _EvictionCheck(self))
        if not self._watching_writable:
            self._watching_writable = True
            self._reactor.want_writable(self.watch, True)

    def _unblock(self) -> None:
        self.blocked_since = None
        if self._watching_writable:
            self._watching_writable = False
            self._reactor.want_writable(self.watch, False)
        self._wake_drainer()

    def _wake_drainer(self) -> None:
        if self._drained is not None and self.buffered_bytes <= self.high_water_bytes // 2:
            self._drained.set()

    def on_writable(self) -> None:
        """Reactor callback: the socket can take more."""
        self._watching_writable = False
        self._reactor.want_writable(self.watch, False)
        if self._pending:
            self.flush()
        else:
            self._send_unsent()
        self._wake_drainer()

    def _lost(self) -> None:
        self.close()

    def on_peer_gone(self) -> None:
        """Reactor callback: the peer closed or reset; nothing more can be sent."""
        self.close()

    def close(self) -> None:
        """Drop whatever is buffered and refuse further writes; wakes a waiting ``drain``."""
        if self.closed:
            return
        self.closed = True
        self._pending.clear()
        self._pending_bytes = 0
        self._unsent = b""
        if self._watching_writable:
            self._watching_writable = False
            self._reactor.want_writable(self.watch, False)
        if self._drained is not None:
            self._drained.set()

    async def finish(self, terminator: bytes) -> None:
        """Send everything buffered plus ``terminator`` and wait until the socket took it all."""
        if self.closed:
            raise ClientDisconnected("the client has gone before the body ended")
        self.finishing = True
        self.flush(terminator)
        await self.drain(0)
