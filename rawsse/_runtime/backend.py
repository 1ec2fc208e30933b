"""Which event loop runs the current task: asyncio or trio, answered in one place.

Contract: ``running_loop()`` is the running asyncio event loop, or None when the task runs on
trio (the only other backend rawsse supports). Callers that take the asyncio fast path (loop
callbacks, plain loop tasks, futures) ask once, when they are set up, and keep the answer;
``current_backend()`` names the backend. Call both from inside a running task.

Why not ``sniffio``: the answer needed is the loop itself, and ``asyncio.get_running_loop``
gives it in one C call; anything that is not asyncio is trio here.
"""

from __future__ import annotations

import asyncio
from typing import Literal

__all__ = ["Backend", "current_backend", "running_loop"]

Backend = Literal["asyncio", "trio"]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or None on trio."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def current_backend() -> Backend:
    """``"asyncio"`` or ``"trio"``: the backend running the current task."""
    return "trio" if running_loop() is None else "asyncio"
