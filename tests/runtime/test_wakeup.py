"""The one-task parking spot the connection driver waits for input on (both backends)."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from rawsse._runtime.wakeup import new_wakeup
from tests.support import wait_for

pytestmark = pytest.mark.anyio


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
