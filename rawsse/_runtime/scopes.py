"""Cancel scopes native to the running backend, for the ones a connection holds.

Why: on trio, ``anyio.CancelScope`` wraps a ``trio.CancelScope`` in an object with a dict of
its own. A held stream keeps one scope for its whole life, so on trio the wrapper is memory per
stream for nothing; there the driver uses trio's scope directly. On asyncio anyio's scope *is*
the native one. Both offer what the driver and ``EventStream`` use: ``with``, ``cancel()``,
``deadline`` (on the backend's clock, as ``anyio.current_time()``) and ``cancel_called``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol

import anyio

from rawsse._runtime.backend import running_loop

__all__ = ["CancelScopeLike", "native_cancel_scope"]


class CancelScopeLike(Protocol):
    """The part of a cancel scope rawsse's connection driver relies on."""

    deadline: float

    @property
    def cancel_called(self) -> bool:
        """Whether ``cancel()`` was called (or the deadline passed)."""

    def cancel(self, reason: str | None = None) -> None:
        """Cancel whatever runs inside the scope."""

    def __enter__(self) -> CancelScopeLike: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


def native_cancel_scope() -> Callable[[], CancelScopeLike]:
    """The cancel-scope class to use on the running backend (call from inside it)."""
    if running_loop() is None:
        import trio

        return trio.CancelScope
    return anyio.CancelScope
