"""Waiting on the server's shared timer: ``Ticker`` (a fixed schedule) and ``sleep``.

Contract: ``Ticker(interval_s)`` starts a schedule at the moment it is made; each
``await ticker.tick()`` returns at the schedule's next point (origin + k * interval, or a step
of its own: ``tick(step_s)``). The schedule is fixed: a tick that comes late (a busy server)
does not push the later ones back, and a tick already due returns after one checkpoint, so a
late producer catches up. ``await sleep(seconds)`` is ``anyio.sleep`` on the same timer, and a
task's sleeps keep to a schedule too: how late one ended (the timer's slack, a busy loop) is
taken off the task's next ``sleep``, so ``while ...: await sleep(d); send()`` holds its rate
of one per ``d`` seconds instead of losing a few percent to every late wake-up (a task behind
by a whole wait or more gets its sleeps back after one checkpoint each until it has caught
up, as a ``Ticker`` does, up to a second of backlog; the time those checkpoints take on a busy
loop counts against the schedule too). A tick never comes before its point of the schedule; a sleep
never ends before ``seconds`` after the previous one was due (after the call, for a task's
first); the timer itself fires at most its slack (``TIMER_SLACK_S``, 5 ms) late, which lets
one wake-up of the timer serve every stream due then.

Why they exist: a paced producer (tokens at a steady rate, a smoothed stream, the demo models)
waits once per event. ``anyio.sleep`` costs a timer handle in the event loop's heap, whose
comparisons run in Python, plus anyio's backend lookup; on trio, a cancel scope per sleep. Here
a wait is one entry in the reactor's heap of plain tuples and one parked task. Outside a rawsse
server (no reactor in the context) both fall back to ``anyio.sleep``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from contextvars import ContextVar

import anyio

from rawsse._runtime.reactor import CURRENT_REACTOR, Reactor
from rawsse._runtime.wakeup import wakeup_factory

__all__ = ["Ticker", "fresh_sleep_schedule", "sleep"]


# The most lateness a task's sleeps make up for, by returning at once (a burst after a stall).
_MAX_CATCH_UP_S = 1.0

# How long after its due time the task's last ``sleep`` resumed (set when a wait ends, in the
# task's own context; a task that is still waiting has set nothing, so costs nothing here).
_LATENESS: ContextVar[float] = ContextVar("rawsse_sleep_lateness", default=0.0)


def fresh_sleep_schedule() -> None:
    """Forget how late this task's last ``sleep`` resumed: its next one waits in full.

    The connection task runs one stream after another on a kept-alive connection; the
    lateness of one stream's last sleep must not shorten the next stream's first.
    """
    if _LATENESS.get():
        _LATENESS.set(0.0)


def sleep(seconds: float) -> Awaitable[None]:
    """Wait ``seconds`` (``await rawsse.sleep(s)``), on the server's shared timer.

    Consecutive sleeps of one task keep to a schedule: how late the last one ended is taken
    off this one, so a loop pacing with it holds its rate.
    """
    if not seconds >= 0:  # also refuses NaN
        raise ValueError(f"seconds must be >= 0: {seconds!r}")
    reactor = CURRENT_REACTOR.get()
    if reactor is None or seconds == 0:
        return anyio.sleep(seconds)
    # A fresh parking spot per wait: the timer entry of a cancelled wait stays in the heap
    # until its time and must not wake a later one.
    # (The reactor keeps the maker: asking the backend on every wait costs a raised and
    # caught RuntimeError on trio.)
    new_wakeup = reactor.wakeup_maker
    if new_wakeup is None:
        new_wakeup = reactor.wakeup_maker = wakeup_factory()
    # Due ``seconds`` after the last sleep was (when it resumed late, that much earlier than
    # ``seconds`` from now); a stall beyond _MAX_CATCH_UP_S is not made up for in a burst.
    late = _LATENESS.get()
    if late > _MAX_CATCH_UP_S:  # (not min(): a builtin with keywords costs more than a branch)
        late = _MAX_CATCH_UP_S
    now = time.monotonic()
    due = now + seconds - late
    # The wait itself is returned, not awaited here: a task parked in it holds one coroutine
    # frame (the park), not one more for this function. Either way the wait, once over,
    # records how late it resumed against ``due``.
    if due <= now:
        # Behind by a whole wait or more: no wait, one checkpoint, and the time that takes
        # (a busy loop runs every other ready task first) counts against the next sleep, so
        # a loaded server catches up as with a Ticker.
        return new_wakeup().catch_up(due, _LATENESS)
    return new_wakeup().park_until(reactor, due, _LATENESS)


class Ticker:
    """A fixed schedule of ticks ``interval_s`` apart, starting now (monotonic clock).

    One task at a time awaits ``tick()``. Cancelling a waiting ``tick()`` leaves the schedule
    where it was advanced to: the next ``tick()`` waits for the point after it.
    """

    __slots__ = ("_reactor", "interval_s", "next_at")

    def __init__(self, interval_s: float) -> None:
        if not interval_s >= 0:  # also refuses NaN
            raise ValueError(f"interval_s must be >= 0: {interval_s!r}")
        self.interval_s = interval_s
        # When the next tick is due, in ``time.monotonic()`` terms (the reactor's clock).
        self.next_at = time.monotonic()
        self._reactor: Reactor | None = CURRENT_REACTOR.get()

    def tick(self, step_s: float | None = None) -> Awaitable[None]:
        """Wait for the next point of the schedule: ``step_s`` (default ``interval_s``) on.

        Use as ``await ticker.tick()``.
        """
        if step_s is None:
            step_s = self.interval_s
        elif not step_s >= 0:
            raise ValueError(f"step_s must be >= 0: {step_s!r}")
        due = self.next_at = self.next_at + step_s
        reactor = self._reactor
        if reactor is None:
            return anyio.sleep(max(0.0, due - time.monotonic()))
        new_wakeup = reactor.wakeup_maker
        if new_wakeup is None:
            new_wakeup = reactor.wakeup_maker = wakeup_factory()
        if due <= time.monotonic():
            return new_wakeup().catch_up(due)  # late: no wait, but still a checkpoint
        return new_wakeup().park_until(reactor, due)
