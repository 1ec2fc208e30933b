"""The one-task parking spot the connection driver waits for input on (both backends)."""

from __future__ import annotations

import anyio
import pytest

from rawsse._runtime.wakeup import new_wakeup

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
            await anyio.sleep(0.05)
            assert not resumed.is_set()
            wakeup.wake()
            await resumed.wait()


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
    wakeup.wake()  # after the cancellation: must not touch the task that parked
    wakeup.wake()
    await anyio.sleep(0.01)

    async def wake_soon() -> None:
        await anyio.sleep(0.05)
        wakeup.wake()
        wakeup.wake()  # a second wake before the task ran is a no-op

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wake_soon)
            await wakeup.park()
