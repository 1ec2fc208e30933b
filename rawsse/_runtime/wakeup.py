"""A one-task parking spot: ``await park()`` until a callback calls ``wake()``.

Contract: at most one task parks at a time; ``wake()`` from a reactor callback (same thread)
makes it runnable, and is a no-op when nobody is parked. Cancellation (an anyio cancel scope
around ``park``) works as for any other await.

Why not ``anyio.Event``: a connection waits for input once per request, and an Event (with the
cancel scope a timeout needs) costs several times the wait itself. Here a wait is one asyncio
future, or one trio ``wait_task_rescheduled``, and timeouts come from the reactor's shared timer.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Callable, Generator
from contextvars import ContextVar
from functools import partial
from typing import Any, Protocol

from rawsse._runtime.backend import running_loop

__all__ = ["TimerLike", "Wakeup", "new_wakeup", "wakeup_factory"]


class TimerLike(Protocol):
    """A shared timer (``Reactor``): calls ``target.on_timer(now)`` at ``when``."""

    def call_at(self, when: float, target: Any) -> None:
        """Arrange the call."""


class Wakeup(Protocol):
    """Park one task until woken."""

    async def park(self) -> None:
        """Wait until ``wake()`` (or cancellation)."""

    async def park_for(self, seconds: float) -> None:
        """Park until ``wake()`` or until ``seconds`` have passed, whichever comes first (on
        the event loop's own timer: for the one task that runs the shared timer)."""

    async def park_until(
        self, timer: TimerLike, when: float, lateness: ContextVar[float] | None = None
    ) -> None:
        """Park, and have ``timer`` wake this at ``when`` (registered as the wait starts, so a
        wait made now and awaited later cannot miss its wake-up). Woken (not cancelled), it
        sets ``lateness``, if given, to how long after ``when`` the task resumed."""

    async def catch_up(self, when: float, lateness: ContextVar[float] | None = None) -> None:
        """A wait already due at ``when``: no parking, one checkpoint (the task yields to the
        scheduler and cancellation is delivered, as in any wait), then ``lateness``, if given,
        is set to how long after ``when`` the task resumed."""

    def wake(self) -> None:
        """Make the parked task runnable; nothing when no task is parked."""

    @property
    def parked(self) -> bool:
        """Whether a task waits here now (and a ``wake()`` would resume it)."""

    def on_timer(self, now: float) -> float | None:
        """As a shared-timer entry (``Reactor.call_at``): wake the parked task, once."""


class _AsyncioWakeup:
    __slots__ = ("_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None

    async def park(self) -> None:
        future = self._future = self._loop.create_future()
        try:
            await future
        finally:
            self._future = None

    async def park_for(self, seconds: float) -> None:
        # A loop timer that wakes, not a cancel scope that cancels: no exception per wait.
        handle = self._loop.call_later(seconds, self.wake)
        try:
            await self.park()
        finally:
            handle.cancel()

    async def park_until(
        self, timer: TimerLike, when: float, lateness: ContextVar[float] | None = None
    ) -> None:
        timer.call_at(when, self)
        future = self._future = self._loop.create_future()
        try:
            await future
        finally:
            self._future = None
        if lateness is not None:
            lateness.set(time.monotonic() - when)

    async def catch_up(self, when: float, lateness: ContextVar[float] | None = None) -> None:
        await _yield_to_loop()
        if lateness is not None:
            lateness.set(time.monotonic() - when)

    def wake(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    @property
    def parked(self) -> bool:
        future = self._future
        return future is not None and not future.done()

    def on_timer(self, now: float) -> None:
        self.wake()


@types.coroutine
def _yield_to_loop() -> Generator[None, None, None]:
    # A bare yield: the task is scheduled again at once (``asyncio.sleep(0)`` without its
    # coroutine); a cancellation is thrown in here as into any other wait.
    yield


_trio: Any = None  # trio and trio.lowlevel, imported on first use (trio is optional)
_trio_lowlevel: Any = None


class _TrioWakeup:
    __slots__ = ("_task",)

    def __init__(self) -> None:
        global _trio, _trio_lowlevel
        if _trio_lowlevel is None:
            import trio
            import trio.lowlevel

            _trio, _trio_lowlevel = trio, trio.lowlevel
        self._task: Any = None

    async def park(self) -> None:
        self._task = _trio_lowlevel.current_task()
        await _trio_lowlevel.wait_task_rescheduled(self._abort)

    async def park_for(self, seconds: float) -> None:
        # trio's own scope (anyio's wraps it in an object of its own): a deadline is how trio
        # times a wait.
        with _trio.move_on_after(seconds):
            await self.park()

    async def park_until(
        self, timer: TimerLike, when: float, lateness: ContextVar[float] | None = None
    ) -> None:
        timer.call_at(when, self)
        self._task = _trio_lowlevel.current_task()
        await _trio_lowlevel.wait_task_rescheduled(self._abort)
        if lateness is not None:
            lateness.set(time.monotonic() - when)

    async def catch_up(self, when: float, lateness: ContextVar[float] | None = None) -> None:
        await _trio_lowlevel.checkpoint()
        if lateness is not None:
            lateness.set(time.monotonic() - when)

    def _abort(self, _raise_cancel: object) -> Any:
        # Cancelled: forget the task so that a later wake() cannot reschedule it twice.
        self._task = None
        return _trio_lowlevel.Abort.SUCCEEDED

    def wake(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            _trio_lowlevel.reschedule(task)

    @property
    def parked(self) -> bool:
        return self._task is not None

    def on_timer(self, now: float) -> None:
        self.wake()


def wakeup_factory() -> Callable[[], Wakeup]:
    """A maker of parking spots for the running backend, for callers that need many."""
    loop = running_loop()
    if loop is None:
        return _TrioWakeup
    return partial(_AsyncioWakeup, loop)


def new_wakeup() -> Wakeup:
    """A parking spot for the running backend (asyncio or trio)."""
    return wakeup_factory()()
