"""``BodyWriter`` on its own: coalescing, framing, backpressure, eviction, heartbeats, the end,
both backends, on a real reactor and a loopback TCP connection."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from rawsse._errors import ClientDisconnected, SlowClientEvicted
from rawsse._http.body import BodyWriter
from rawsse._runtime.reactor import Reactor
from tests.support import recv_some, reset_close, tcp_pair, wait_for

pytestmark = pytest.mark.anyio


class Peer:
    """The connection side the writer reports to (``SocketWatch``), and the client's end."""

    def __init__(self, sock: socket.socket, client: socket.socket) -> None:
        self._sock = sock
        self.client = client
        self.gone = 0
        self.writer: BodyWriter | None = None

    @property
    def sock(self) -> socket.socket:
        return self._sock

    def on_peer_gone(self) -> None:
        self.gone += 1
        if self.writer is not None:
            self.writer.on_peer_gone()

    def on_peer_eof(self) -> None:
        self.on_peer_gone()

    def on_writable(self) -> None:
        if self.writer is not None:
            self.writer.on_writable()

    def on_readable(self) -> None:
        pass

    async def read(self, count: int) -> bytes:
        """What the client received, once at least ``count`` bytes came."""
        data = b""
        with anyio.fail_after(5):
            while len(data) < count:
                chunk = await recv_some(self.client)
                assert chunk, f"closed after {data!r}"
                data += chunk
        return data


@asynccontextmanager
async def writer_on_socket(
    *, chunked: bool = True, prefix: bytes = b"", send_timeout_s: float = 5.0, rcvbuf: int = 0
) -> AsyncIterator[tuple[BodyWriter, Peer, Reactor]]:
    server, client = tcp_pair()
    if rcvbuf:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
    peer = Peer(server, client)
    reactor = Reactor()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reactor.run)
            await anyio.lowlevel.checkpoint()
            reactor.watch(peer)
            writer = peer.writer = BodyWriter(
                server,
                reactor,
                peer,
                chunked=chunked,
                high_water_bytes=1024,
                send_timeout_s=send_timeout_s,
                prefix=prefix,
            )
            yield writer, peer, reactor
            reactor.unwatch(peer)
            tg.cancel_scope.cancel()
    finally:
        server.close()
        client.close()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def test_frames_of_one_turn_go_out_as_one_chunk_after_the_prefix() -> None:
    async with writer_on_socket(prefix=b"HEAD\r\n\r\n") as (writer, peer, _):
        for frame in (b"one\n", b"two\n", b"three\n"):
            assert writer.write(frame) is False
        assert writer.buffered_bytes == len(b"HEAD\r\n\r\none\ntwo\nthree\n")
        expected = b"HEAD\r\n\r\n" + chunk(b"one\ntwo\nthree\n")
        assert await peer.read(len(expected)) == expected
        assert writer.bytes_sent == len(expected)
        assert writer.buffered_bytes == 0


async def test_close_delimited_bodies_are_not_framed() -> None:
    async with writer_on_socket(chunked=False) as (writer, peer, _):
        writer.write(b"raw ")
        writer.write(b"bytes")
        assert await peer.read(9) == b"raw bytes"
        await writer.finish(b"")
        assert writer.finishing


async def test_finish_sends_what_is_pending_then_the_terminator() -> None:
    async with writer_on_socket() as (writer, peer, _):
        writer.write(b"last")
        await writer.finish(b"0\r\n\r\n")
        assert await peer.read(14) == chunk(b"last") + b"0\r\n\r\n"
        writer.push(b"after the end")  # a push after finish is dropped, not sent
        assert writer.buffered_bytes == 0


async def test_past_the_high_water_mark_write_asks_to_drain() -> None:
    async with writer_on_socket() as (writer, peer, _):
        assert writer.write(b"a" * 1000) is False
        assert writer.write(b"b" * 100) is True  # over 1024 buffered
        await writer.drain()  # the socket takes it all
        assert writer.buffered_bytes <= 512
        await peer.read(1100)


async def test_a_client_that_does_not_read_is_evicted_after_the_send_timeout() -> None:
    async with writer_on_socket(send_timeout_s=0.3, rcvbuf=4096) as (writer, peer, _):

        async def produce() -> None:
            for _ in range(100_000):  # far more than the socket buffers hold
                if writer.write(b"x" * 1000):
                    await writer.drain()

        with pytest.raises(SlowClientEvicted):
            await produce()
        assert writer.evicted and writer.closed
        assert peer.gone == 1  # the connection was told: its handler is cancelled
        with pytest.raises(ClientDisconnected):
            writer.write(b"more")


async def test_a_blocked_writer_catches_up_when_the_client_reads() -> None:
    async with writer_on_socket(rcvbuf=4096) as (writer, peer, _):
        total = 0
        for _ in range(100_000):  # until the socket's buffers are full
            writer.write(b"y" * 1000)
            writer.flush()
            total += len(chunk(b"y" * 1000))
            if writer.blocked_since is not None:
                break
        assert writer.blocked_since is not None and writer.buffered_bytes > 0

        async def drain_client() -> None:
            await peer.read(total)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain_client)
            await writer.drain(0)
        assert writer.buffered_bytes == 0 and writer.blocked_since is None
        assert not writer.evicted


async def test_pushes_past_the_hard_cap_evict_at_once() -> None:
    async with writer_on_socket(rcvbuf=4096) as (writer, peer, _):
        for _ in range(writer.max_buffer_bytes // 1000 + 200):
            writer.push(b"z" * 1000)
            if writer.closed:
                break
        assert writer.evicted and peer.gone == 1


async def test_a_reset_client_closes_the_writer() -> None:
    async with writer_on_socket() as (writer, peer, _):
        reset_close(peer.client)
        await wait_for(lambda: writer.closed)
        with pytest.raises(ClientDisconnected):
            writer.write(b"x")
        with pytest.raises(ClientDisconnected):
            await writer.finish(b"0\r\n\r\n")


async def test_heartbeats_fill_silences_and_data_pushes_them_back() -> None:
    beats: list[int] = []
    async with writer_on_socket() as (writer, peer, _):
        writer.enable_keepalive(b":\n\n", 0.05, lambda: beats.append(1))
        data = await peer.read(len(chunk(b":\n\n")) * 2)
        assert data == chunk(b":\n\n") * 2
        assert len(beats) >= 2
        writer.close()
        count = len(beats)
        # A closed writer's entry comes due once more and sends nothing.
        await wait_for(lambda: writer._reactor.timer_count == 0)
        assert len(beats) == count


async def test_no_heartbeat_once_finishing() -> None:
    async with writer_on_socket() as (writer, peer, reactor):
        writer.enable_keepalive(b":\n\n", 0.02)
        await writer.finish(b"0\r\n\r\n")
        await wait_for(lambda: reactor.timer_count == 0)
        # Exactly the terminator: no heartbeat after it.
        assert await peer.read(5) == b"0\r\n\r\n"


def after_a_pause(writer: BodyWriter) -> None:
    """As if the last frame went out a while ago (a paced stream between two tokens)."""
    writer.last_write_s -= 1.0


async def test_a_frame_after_a_pause_is_sent_by_write_itself() -> None:
    async with writer_on_socket() as (writer, peer, _):
        after_a_pause(writer)
        assert writer.write(b"token\n") is False
        # Sent before the writer yields to the loop: nothing buffered, nothing scheduled.
        assert writer.buffered_bytes == 0
        assert writer.bytes_sent == len(chunk(b"token\n"))
        assert peer.client.recv(100, socket.MSG_DONTWAIT) == chunk(b"token\n")
        # A frame right behind it is queued and coalesced with the next ones, as usual.
        writer.write(b"a\n")
        writer.write(b"b\n")
        assert writer.buffered_bytes == 4
        assert await peer.read(len(chunk(b"a\nb\n"))) == chunk(b"a\nb\n")


async def test_a_frame_after_a_pause_the_socket_takes_in_part_keeps_order_and_backpressure() -> (
    None
):
    async with writer_on_socket(rcvbuf=4096) as (writer, peer, _):
        # One big frame after a pause, with the client not reading: the socket takes what
        # fits and the writer keeps the rest, watching for writability.
        big = bytes(range(256)) * 512  # 128 KiB: more than this socket's buffers hold
        after_a_pause(writer)
        assert writer.write(big) is False  # (a lone frame: backpressure asks at the next one)
        assert 0 < writer.buffered_bytes < len(chunk(big))
        assert writer.blocked_since is not None
        # A later paced frame must not overtake the unsent rest: it is queued behind it, and
        # the producer is told to wait (the buffer is past the high-water mark).
        after_a_pause(writer)
        assert writer.write(b"next\n") is True
        expected = chunk(big) + chunk(b"next\n")

        async def read_all() -> None:
            data = b""
            with anyio.fail_after(20):
                while len(data) < len(expected):
                    data += await recv_some(peer.client)
            assert data == expected

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_all)
            await writer.drain(0)
        assert writer.buffered_bytes == 0 and writer.blocked_since is None
        assert not writer.evicted
