"""Where bench's connections come from: source addresses over 127.0.0.0/8, explicit ports.

Why: a TCP connection is the 4-tuple (source address, source port, server address, server
port), so one source address holds at most about 64,000 connections to one server port. And
Linux finds a free source port for ``connect()`` by scanning the ephemeral range for a free
4-tuple: past about 14,000 connections from one address to one server the scan crosses half the
range on every connect (measured here: the open rate fell from ~1,800/s to ~150/s, and the
client's system CPU tripled). Binding each socket to an explicit (address, port) first skips
the scan. On loopback every 127.x.y.z is an address of this machine, so each load process can
have one of its own.

Contract: ``plan_sources(address, processes, streams)`` says which source address each of the
``processes`` load processes binds to, or ``None`` each when the kernel should choose (a server
that is not on IPv4 loopback, or one process with few streams). ``SourcePorts(address)`` hands
out that address's ports in turn, from a random start. ``open_socket_from(address, port,
source)`` connects a non-blocking TCP socket (``TCP_NODELAY``) from the next port of ``source``
that is free, trying up to ``ATTEMPTS`` of them; with ``source=None`` the kernel picks. Raises
``OSError``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import socket

from rawsse.client._connection import open_socket, wait_writable

__all__ = [
    "ATTEMPTS",
    "EXPLICIT_FROM_STREAMS",
    "PORT_RANGE",
    "SourcePorts",
    "open_socket_from",
    "plan_sources",
    "source_address",
]

# Ports a source address hands out: above the well-known and registered-low ones.
PORT_RANGE = (10_000, 65_000)
# A port whose 4-tuple is taken (a connection in TIME_WAIT, another program's socket) is
# skipped; this many in a row means the range is used up.
ATTEMPTS = 64
# One process picks source ports itself from this many streams on (the kernel's scan slows
# down past about 14,000 connections per source address).
EXPLICIT_FROM_STREAMS = 10_000


def source_address(index: int) -> str:
    """The source address of load process ``index``: 127.1.0.1, 127.1.0.2, ... (never the
    127.0.0.x addresses servers usually listen on)."""
    return str(ipaddress.IPv4Address("127.1.0.1") + index)


def plan_sources(address: str, processes: int, streams: int) -> list[str | None]:
    """Each load process's source address (see the module contract)."""
    try:
        server = ipaddress.ip_address(address)
    except ValueError:
        server = None
    explicit = processes > 1 or streams >= EXPLICIT_FROM_STREAMS
    if not explicit or not isinstance(server, ipaddress.IPv4Address) or not server.is_loopback:
        return [None] * processes
    return [source_address(index) for index in range(processes)]


class SourcePorts:
    """The ports of one source address, handed out in turn from a random start."""

    __slots__ = ("_next", "address", "skipped")

    def __init__(self, address: str) -> None:
        self.address = address
        low, high = PORT_RANGE
        self._next = random.randint(low, high)
        self.skipped = 0  # ports found taken

    def take(self) -> int:
        """The next port to try."""
        port = self._next
        low, high = PORT_RANGE
        self._next = low if port >= high else port + 1
        return port


async def open_socket_from(address: str, port: int, source: SourcePorts | None) -> socket.socket:
    """A connected non-blocking TCP socket to ``address:port`` from ``source``'s next free port
    (or the kernel's choice when ``source`` is None). Raises ``OSError``."""
    if source is None:
        return await open_socket(address, port)
    for _ in range(ATTEMPTS):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            # Lets a port whose last connection is in TIME_WAIT be bound again; connect() then
            # refuses only a 4-tuple really in use (EADDRNOTAVAIL), and the next port is tried.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.bind((source.address, source.take()))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                code = errno.EADDRINUSE
            else:
                code = sock.connect_ex((address, port))
            if code in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                source.skipped += 1
                sock.close()
                continue
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
    raise OSError(
        errno.EADDRNOTAVAIL,
        f"no free source port on {source.address} ({ATTEMPTS} taken in a row)",
    )
