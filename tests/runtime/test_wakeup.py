"""The one-task parking spot the connection driver waits for input on, and the shared timer's
waits (``park_for``, ``catch_up``), on both backends."""

from __future__ import annotations

import time
from contextvars import ContextVar

import anyio
import anyio.lowlevel
import pytest

from rawsse._runtime.wakeup import new_wakeup
from tests.support import wait_for

pytestmark = pytest.mark.anyio

# Absorbs float rounding between two readings of the clock (waits never end early).
CLOCK_TOLERANCE_S = 1e-4


async def test_wake_resumes_the_parked_task() -> None:
    wakeup = new_wakeup()
    resumed = anyio.Event()

    async def parker() -> None:
        await wakeup.park()
        resumed.set()

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(parker)
            await wait_for(lambda: wakeup.parked)
            assert not resumed.is_set()
            wakeup.wake()
            await resumed.wait()
    assert not wakeup.parked


async def test_wake_with_nobody_parked_is_forgotten() -> None:
    wakeup = new_wakeup()
    wakeup.wake()  # nobody parked: no effect on the next park
    with anyio.move_on_after(0.1) as scope:
        await wakeup.park()
    assert scope.cancelled_caught


async def test_cancelled_park_then_wake_is_harmless_and_reusable() -> None:
    wakeup = new_wakeup()
    with anyio.move_on_after(0.05) as scope:
        await wakeup.park()
    assert scope.cancelled_caught
    assert not wakeup.parked
    wakeup.wake()  # after the cancellation: must not touch the task that parked
    wakeup.wake()
    await anyio.lowlevel.checkpoint()  # (a wrong reschedule would surface here)

    async def wake_soon() -> None:
        await wait_for(lambda: wakeup.parked)
        wakeup.wake()
        wakeup.wake()  # a second wake before the task ran is a no-op

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wake_soon)
            await wakeup.park()


async def test_park_for_ends_at_its_time_or_at_a_wake_whichever_first() -> None:
    wakeup = new_wakeup()
    started = time.monotonic()
    with anyio.fail_after(2):
        await wakeup.park_for(0.05)  # nobody wakes it: its own time ends it
    assert time.monotonic() - started >= 0.05 - CLOCK_TOLERANCE_S
    assert not wakeup.parked

    async def wake_soon() -> None:
        await wait_for(lambda: wakeup.parked)
        wakeup.wake()

    started = time.monotonic()
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wake_soon)
            await wakeup.park_for(30)
    assert time.monotonic() - started < 5
    # A cancelled park_for leaves nothing behind that could wake a later park.
    with anyio.move_on_after(0.02):
        await wakeup.park_for(0.05)
    with anyio.move_on_after(0.1) as scope:
        await wakeup.park()
    assert scope.cancelled_caught


async def test_catch_up_is_one_checkpoint_that_reports_its_lateness() -> None:
    lateness: ContextVar[float] = ContextVar("lateness", default=-1.0)
    due = time.monotonic() - 0.5  # already half a second overdue
    await new_wakeup().catch_up(due, lateness)
    assert 0.5 - CLOCK_TOLERANCE_S <= lateness.get() < 5
    # A checkpoint: a cancelled scope cancels it, and then nothing is recorded.
    lateness.set(-1.0)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await new_wakeup().catch_up(time.monotonic(), lateness)
    assert scope.cancelled_caught
    assert lateness.get() == -1.0
