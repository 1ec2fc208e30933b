"""The built-in demo app that ``rawsse serve`` runs with no APP.

Contract: ``create_demo_app(options)`` returns an App with the chat endpoints of every dialect
(mounted by ``rawsse.chat.mount_chat`` on the demo models ``echo`` and ``lorem``), ``/healthz``,
``/metrics`` and the wire lab page at ``/`` (``rawsse.lab.mount_lab``). Nothing here is
special-cased: it is an ordinary application of the framework.
"""

from __future__ import annotations

from dataclasses import dataclass

from rawsse.app import App
from rawsse.metrics import metrics_handler
from rawsse.request import Request
from rawsse.response import Response

__all__ = ["DemoOptions", "create_demo_app"]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the command line passes to the demo app."""

    api_keys: tuple[str, ...] = ()
    token_delay_s: float = 0.02
    resume_grace_s: float = 0.0
    cors_origins: tuple[str, ...] = ()
    redis_url: str | None = None  # share resumable streams through Redis (rawsse.redis)


def create_demo_app(options: DemoOptions | None = None) -> App:
    """Build the demo app: chat endpoints on the demo models, health and metrics."""
    options = options or DemoOptions()
    app = App(cors_origins=options.cors_origins)

    async def healthz(request: Request) -> Response:
        return Response("ok\n")

    app.add_route("/healthz", healthz, ("GET",))
    app.add_route(
        "/metrics",
        metrics_handler(lambda: app.server.stats if app.server is not None else None),
        ("GET",),
    )
    try:
        from rawsse.chat.demo import demo_models
        from rawsse.chat.mount import mount_chat
    except ImportError:  # pragma: no cover - only while the chat layer is being built
        return app
    replay_store = None
    if options.redis_url:
        from rawsse.redis import RedisBus, RedisReplayStore

        replay_store = RedisReplayStore(RedisBus.shared(options.redis_url))
    chat = mount_chat(
        app,
        demo_models(token_delay_s=options.token_delay_s),
        api_keys=options.api_keys,
        resume_grace_s=options.resume_grace_s,
        replay_store=replay_store,
    )
    from rawsse.lab import mount_lab

    mount_lab(app, chat)
    return app
