"""Apps the scale-out tests serve with ``rawsse serve MODULE:APP --redis URL``."""

from __future__ import annotations

import os

from rawsse.app import App
from rawsse.broadcast import Broadcast
from rawsse.chat.demo import demo_models
from rawsse.chat.mount import mount_chat
from rawsse.redis import RedisBus, RedisReplayStore
from rawsse.request import Request
from rawsse.response import Response
from rawsse.stream import EventStream


def trimmed_chat_app() -> App:
    """The chat routes on the demo models, keeping only 5 frames per stream in Redis."""
    app = App()
    store = RedisReplayStore(RedisBus.shared(), max_events_per_stream=5)
    mount_chat(app, demo_models(token_delay_s=0.0), replay_store=store)
    return app


def broadcast_app() -> App:
    """One broadcast channel, ``news``, shared through Redis: ``GET /events`` subscribes
    (``Last-Event-ID`` replays what was missed), ``POST /publish`` publishes the body's text,
    ``GET /subscribers`` counts this process's subscribers."""
    app = App()
    history = int(os.environ.get("NEWS_HISTORY", "1000"))
    news = Broadcast(channel="news", bus=RedisBus.shared(), history=history)

    @app.get("/events")
    async def events(request: Request) -> EventStream:
        return news.subscribe(last_event_id=request.last_event_id)

    @app.post("/publish")
    async def publish(request: Request) -> Response:
        count = news.publish(request.body.decode())
        await RedisBus.shared().flushed()  # answered once Redis has it: one order for tests
        return Response(f"{count}\n")

    @app.get("/subscribers")
    async def subscribers(request: Request) -> Response:
        return Response(f"{news.subscriber_count}\n")

    return app
