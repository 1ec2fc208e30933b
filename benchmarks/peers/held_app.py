"""The held-stream scenario's rawsse app: the demo chat endpoints plus a ``held`` model.

Run: ``rawsse serve benchmarks.peers.held_app:app --workers 6 --heartbeat 15 --port 0``.

``POST /v1/chat/completions`` with model ``lorem`` is the demo model as ``rawsse serve`` runs
it with ``--token-delay 3600`` (the first token, then an hour's wait on the shared timer: a held
idle chat stream). Model ``held`` answers the same first token and then waits for *notices*:
while the file named by ``RAWSSE_HELD_NOTICE_FILE`` exists, every worker publishes a notice at
each wall-clock multiple of 5 s, and every held stream answers it with one token
``" notice@T"`` (T: the wall time it was due), so the client can time the fan-out from due time
to last delivery. A waiting stream is parked on a one-task wake-up (a future on asyncio), about
what the demo model's ``rawsse.sleep`` costs, so the idle phase measures a held chat stream.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import anyio

from rawsse._runtime.wakeup import Wakeup, new_wakeup
from rawsse.app import App
from rawsse.chat.demo import demo_models
from rawsse.chat.mount import mount_chat
from rawsse.chat.request import ChatRequest
from rawsse.request import Request
from rawsse.response import Response

NOTICE_EVERY_S = 5.0


class Notices:
    """Parked streams, woken all at once by ``publish``."""

    def __init__(self) -> None:
        self.waiters: list[Wakeup] = []
        self.due = 0.0
        self.started = False

    async def wait(self) -> float:
        wakeup = new_wakeup()
        self.waiters.append(wakeup)
        await wakeup.park()  # no deadline: a notice or the client leaving ends it
        return self.due

    def publish(self, due: float) -> int:
        self.due = due
        waiters, self.waiters = self.waiters, []
        for wakeup in waiters:
            wakeup.wake()
        return len(waiters)

    async def run(self, trigger: str) -> None:
        """Publish at every 5 s wall-clock boundary while ``trigger`` exists."""
        while True:
            due = (time.time() // NOTICE_EVERY_S + 1) * NOTICE_EVERY_S
            await anyio.sleep(max(0.0, due - time.time()))
            # A stat of a local file every 5 s: not worth a thread.
            if trigger and os.path.exists(trigger):  # noqa: ASYNC240
                self.publish(due)


NOTICES = Notices()


async def _held(request: ChatRequest) -> AsyncIterator[str]:
    yield "Lorem"
    while True:
        due = await NOTICES.wait()
        yield f" notice@{due:.3f}"


def _make_app() -> App:
    app = App()

    async def healthz(request: Request) -> Response:
        return Response("ok\n")

    def held(request: ChatRequest) -> AsyncIterator[str]:
        if not NOTICES.started and app.server is not None:
            # Each worker process starts its own publisher with its first held stream.
            NOTICES.started = True
            app.server.spawn(NOTICES.run, os.environ.get("RAWSSE_HELD_NOTICE_FILE", ""))
        return _held(request)

    app.add_route("/healthz", healthz, ("GET",))
    mount_chat(app, {**demo_models(token_delay_s=3600.0), "held": held})
    return app


app = _make_app()
