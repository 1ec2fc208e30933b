"""The few exceptions rawsse raises, named for who is at fault.

Contract: a handler raises ``HTTPError`` to answer with a status; the connection driver raises
``ClientDisconnected`` (and its subclass ``SlowClientEvicted``) when the peer is gone or too slow,
so the stream layer can stop producing. Each carries the HTTP status it implies, if any.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ClientDisconnected", "HTTPError", "RawsseError", "SlowClientEvicted"]


class RawsseError(Exception):
    """Base class of every exception rawsse raises on purpose."""


class HTTPError(RawsseError):
    """Raise in a handler to answer with ``status`` and a short plain-text ``detail``.

    ``headers`` are added to the error response (``Allow`` for 405, ``Retry-After`` for 503).
    """

    def __init__(
        self,
        status: int,
        detail: str = "",
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.headers = list(headers)

    def __str__(self) -> str:
        return f"{self.status} {self.detail}".rstrip()


class ClientDisconnected(RawsseError):
    """The client closed or reset the connection; nothing more can be sent to it."""


class SlowClientEvicted(ClientDisconnected):
    """The client did not take the bytes sent to it within the send timeout and was dropped."""
