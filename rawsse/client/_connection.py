"""One client connection on anyio: send a request, read its head, read its body's payload.

Contract: ``ClientConnection.open(target)`` connects (TCP, or TLS for https). For each request,
``send(exchange)``, then ``receive_head()`` returns the ``ResponseHead``, then ``receive_payload()``
returns body payload bytes until it returns ``None`` at the body's clean end. Every failure is an
``SSEError``: refused, reset or cut short -> ``SSEConnectionError``, too slow ->
``SSETimeoutError``, malformed -> ``SSEProtocolError``. When a hook is given it sees every
``Sent`` and ``Received`` byte string and the body framing, stamped with ``time.perf_counter()``.
``reusable`` says whether another request may follow on the same connection.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import ssl
import time

import anyio
import anyio.abc

from rawsse.client._body import BodyDecoder, CloseBody
from rawsse.client._errors import SSEConnectionError, SSETimeoutError
from rawsse.client._exchange import Exchange, ResponseHead, Target
from rawsse.client._wire import Received, Sent, WireHook, WireRecord

__all__ = ["ClientConnection", "connect_ip", "open_socket", "wait_readable", "wait_writable"]

# anyio 4.7 renamed wait_socket_readable/writable (which still exist, deprecated) to these.
wait_readable = getattr(anyio, "wait_readable", None) or anyio.wait_socket_readable
wait_writable = getattr(anyio, "wait_writable", None) or anyio.wait_socket_writable

# One read takes what the kernel has, up to this; 64 KiB matches the usual socket buffer.
_RECV_BYTES = 64 * 1024


async def open_socket(address: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to an IP address (no name lookup), ``TCP_NODELAY``.

    A non-blocking ``connect`` and a wait until writable: no Happy Eyeballs machinery (see
    ``connect_ip``). ``rawsse bench`` reads such sockets itself. Raises ``OSError``.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex((address, port))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))
        await wait_writable(sock)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_ip(address: str, port: int) -> anyio.abc.SocketStream:
    """A TCP connection to an IP address (no name lookup), with ``TCP_NODELAY``.

    ``anyio.connect_tcp`` runs Happy Eyeballs (a task group, an event and a timeout per
    connection attempt); measured here with 1,000 connections opened over half a second, that
    machinery took connects from 0.3 ms to 120-300 ms (p50), on asyncio and trio alike. An IP
    address needs none of it: ``open_socket``, then anyio's ``SocketStream.from_socket``.
    Raises ``OSError`` like ``connect_tcp``; falls back to it on an anyio too old to wrap a
    socket.
    """
    from_socket = getattr(anyio.abc.SocketStream, "from_socket", None)
    if from_socket is None:  # pragma: no cover - anyio < 4.10
        return await anyio.connect_tcp(address, port)
    sock = await open_socket(address, port)
    try:
        stream: anyio.abc.SocketStream = await from_socket(sock)
    except BaseException:
        sock.close()
        raise
    return stream


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ClientConnection:
    """A connection that carries requests one after another (keep-alive)."""

    __slots__ = (
        "_decoder",
        "_exchange",
        "_framing",
        "_head",
        "_hook",
        "_read_t",
        "_stream",
        "reusable",
    )

    def __init__(self, stream: anyio.abc.ByteStream, hook: WireHook | None = None) -> None:
        self._stream = stream
        self._hook = hook
        self._framing: list[WireRecord] | None = [] if hook is not None else None
        self._exchange: Exchange | None = None
        self._head: ResponseHead | None = None
        self._decoder: BodyDecoder | None = None
        self.reusable = False
        self._read_t = 0.0

    @classmethod
    async def open(
        cls,
        target: Target,
        *,
        connect_timeout_s: float | None = 10.0,
        hook: WireHook | None = None,
    ) -> ClientConnection:
        """Connect to ``target``; raises ``SSEConnectionError`` or ``SSETimeoutError``."""
        try:
            with anyio.fail_after(connect_timeout_s):
                if target.scheme == "https":
                    stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                        target.host,
                        target.port,
                        ssl_context=ssl.create_default_context(),
                        tls_hostname=target.host,
                    )
                elif _is_ip(target.host):
                    stream = await connect_ip(target.host, target.port)
                else:
                    stream = await anyio.connect_tcp(target.host, target.port)
        except TimeoutError as exc:
            raise SSETimeoutError(
                f"connecting to {target.authority} took over {connect_timeout_s} s"
            ) from exc
        except OSError as exc:
            raise SSEConnectionError(f"cannot connect to {target.authority}: {exc}") from exc
        return cls(stream, hook)

    async def send(self, exchange: Exchange) -> None:
        """Send ``exchange``'s request."""
        self._exchange = exchange
        self._head = None
        self._decoder = None
        self.reusable = False
        if self._hook is not None:
            self._hook(time.perf_counter(), Sent(exchange.request_bytes))
        try:
            await self._stream.send(exchange.request_bytes)
        except (OSError, anyio.BrokenResourceError) as exc:
            raise SSEConnectionError(f"sending the request failed: {exc}") from exc

    async def receive_head(self, read_timeout_s: float | None = None) -> ResponseHead:
        """Read until the response head is complete and return it."""
        exchange = self._exchange
        assert exchange is not None, "send() a request first"
        while True:
            data = await self._receive(read_timeout_s)
            if not data:
                raise SSEConnectionError("connection closed before a response head arrived")
            head = exchange.feed_head(data)
            if head is not None:
                self._head = head
                self._decoder = exchange.body_decoder(head, self._framing)
                return head

    async def receive_payload(self, read_timeout_s: float | None = None) -> bytes | None:
        """Return the next non-empty piece of body payload, or ``None`` at the body's end."""
        decoder = self._decoder
        exchange = self._exchange
        assert decoder is not None, "receive_head() first"
        assert exchange is not None
        while not decoder.done:
            if exchange.unused:
                data, exchange.unused = exchange.unused, b""
            else:
                data = await self._receive(read_timeout_s)
            if not data:
                decoder.feed_eof()
                self._flush_framing()
                break
            payload = decoder.feed(data)
            self._flush_framing()
            if payload:
                return payload
        assert self._head is not None
        # Bytes after the body (a pipelining server) or an explicit close: no reuse.
        self.reusable = (
            self._head.keep_alive and not decoder.unused and not isinstance(decoder, CloseBody)
        )
        return None

    async def aclose(self) -> None:
        """Close the connection (at once: no graceful TLS close-notify wait)."""
        self.reusable = False
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(self._stream)

    async def _receive(self, read_timeout_s: float | None) -> bytes:
        try:
            with anyio.fail_after(read_timeout_s):
                data = await self._stream.receive(_RECV_BYTES)
        except anyio.EndOfStream:
            data = b""
        except TimeoutError as exc:
            raise SSETimeoutError(f"no data from the server for {read_timeout_s} s") from exc
        except (OSError, anyio.BrokenResourceError) as exc:
            raise SSEConnectionError(f"connection lost: {exc!r}") from exc
        if self._hook is not None:
            self._read_t = time.perf_counter()
            self._hook(self._read_t, Received(data))
        return data

    def _flush_framing(self) -> None:
        framing = self._framing
        if framing:
            assert self._hook is not None
            for record in framing:
                self._hook(self._read_t, record)
            framing.clear()
