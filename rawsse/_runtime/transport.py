"""The byte pipe a connection runs on, and the one place its errors are mapped.

Contract: ``Transport`` is what the connection driver and the body writer need of a connected,
non-blocking socket; ``socket.socket`` satisfies it as it is, and a test can hand the driver
any object that does (bytes in, bytes out, no real socket). Every non-blocking call goes
through the functions below, which map the socket's errors once:

- ``send_now(t, data)``: the bytes the socket took now (0 when its buffer is full);
- ``recv_now(t, size)``: the bytes there now, ``b""`` at the peer's end of input, None when
  nothing is there yet;
- ``peer_closed(t)``: whether the next read would be the end of input (a look, not a read);

and all three raise ``ClientDisconnected`` when the peer has reset or the socket is unusable.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Protocol

from rawsse._errors import ClientDisconnected

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer as Buffer

__all__ = ["HasFileno", "Transport", "peer_closed", "recv_now", "send_now"]


class HasFileno(Protocol):
    """Anything the reactor can watch: it has a file descriptor."""

    def fileno(self) -> int:
        """The descriptor (negative once closed)."""


class Transport(HasFileno, Protocol):
    """A connected non-blocking byte pipe (a ``socket.socket`` is one)."""

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        """Up to ``bufsize`` bytes; ``b""`` at end of input; ``BlockingIOError`` when none."""

    def send(self, data: Buffer, flags: int = 0, /) -> int:
        """Bytes taken from ``data``; ``BlockingIOError`` when none fit."""

    def shutdown(self, how: int, /) -> None:
        """Close one direction (``socket.SHUT_WR``: our end of output)."""

    def close(self) -> None:
        """Release the pipe."""


def send_now(transport: Transport, data: Buffer) -> int:
    """Send what fits now, without waiting: the count taken (0 when the buffer is full)."""
    try:
        return transport.send(data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise ClientDisconnected(str(exc)) from exc


def recv_now(transport: Transport, size: int) -> bytes | None:
    """Read what is there now: up to ``size`` bytes, ``b""`` at end of input, None if none."""
    try:
        return transport.recv(size)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise ClientDisconnected(str(exc)) from exc


def peer_closed(transport: Transport) -> bool:
    """Whether the peer has ended its input with nothing unread before the end (a FIN)."""
    try:
        return transport.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError as exc:
        raise ClientDisconnected(str(exc)) from exc
