"""Run one benchmark in this process, on an event loop, until it ends or Ctrl-C stops it.

Contract: ``drive(config, state, backend, tick)`` runs ``run_bench(config, state)`` on
``backend`` (``asyncio``, ``uvloop`` or ``trio``; ``resolve_backend("auto")`` picks uvloop when
it is installed), calls ``tick()`` every ``TICK_S`` while it runs (a progress line, a progress
report to a parent process), and returns whether SIGINT ended it early: Ctrl-C ends the run as
its end would, so the results so far are reported rather than unwound by a KeyboardInterrupt.
"""

from __future__ import annotations

import importlib.util
import signal
from collections.abc import Callable

import anyio

from rawsse.bench._run import BenchConfig, BenchState, run_bench

__all__ = ["TICK_S", "drive", "resolve_backend"]

TICK_S = 0.5


def resolve_backend(option: str) -> str:
    """``auto``: uvloop when installed, else asyncio; any other name as it is."""
    if option == "auto":
        return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return option


async def _main(config: BenchConfig, state: BenchState, tick: Callable[[], None] | None) -> bool:
    interrupted = False
    async with anyio.create_task_group() as tg:
        if tick is not None:

            async def ticks() -> None:
                while True:
                    await anyio.sleep(TICK_S)
                    tick()

            tg.start_soon(ticks)

        async def stop_on_sigint() -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    interrupted = True
                    tg.cancel_scope.cancel()

        tg.start_soon(stop_on_sigint)
        await run_bench(config, state)
        tg.cancel_scope.cancel()
    return interrupted


def drive(
    config: BenchConfig, state: BenchState, backend: str, tick: Callable[[], None] | None = None
) -> bool:
    """Run the benchmark (see the module contract); returns whether Ctrl-C ended it."""
    if backend == "trio":
        return anyio.run(_main, config, state, tick, backend="trio")
    options = {"use_uvloop": backend == "uvloop"}
    return anyio.run(_main, config, state, tick, backend="asyncio", backend_options=options)
