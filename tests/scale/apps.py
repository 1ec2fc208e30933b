"""Apps the scale-out tests serve with ``rawsse serve MODULE:APP --redis URL``."""

from __future__ import annotations

from rawsse.app import App
from rawsse.chat.demo import demo_models
from rawsse.chat.mount import mount_chat
from rawsse.redis import RedisBus, RedisReplayStore


def trimmed_chat_app() -> App:
    """The chat routes on the demo models, keeping only 5 frames per stream in Redis."""
    app = App()
    store = RedisReplayStore(RedisBus.shared(), max_events_per_stream=5)
    mount_chat(app, demo_models(token_delay_s=0.0), replay_store=store)
    return app
