"""Mounting the wire lab page on an App.

Contract: ``mount_lab(app, chat, path=...)`` adds ``GET path`` (the page: ``lab.html``, shipped
as package data, with its configuration written into it) and, when ``chat`` is given,
``POST {path}lab/cut`` (the resume lab's cut: ``ChatService.end_resumes`` for one stream, to a
caller holding an API key or that stream's resume token). The page talks to its own origin
only: its Content-Security-Policy allows its one script and one style sheet (by hash) and
connections to 'self', nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from typing import TYPE_CHECKING

from rawsse.app import App
from rawsse.jsonio import dumps
from rawsse.request import Request
from rawsse.response import JSONResponse, Response

if TYPE_CHECKING:
    from rawsse.chat.mount import ChatService

__all__ = ["mount_lab"]

_CONFIG_SLOT = b'<script type="application/json" id="lab-config">{}</script>'
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def _page(config: dict[str, object]) -> tuple[bytes, str]:
    """The page with ``config`` written in, and its Content-Security-Policy."""
    html = resources.files("rawsse.lab").joinpath("lab.html").read_bytes()
    # JSON inside a script element: "<" escaped, so no value can close the element.
    data = dumps(config).replace(b"<", b"\\u003c")
    assert _CONFIG_SLOT in html, "lab.html lost its configuration slot"
    html = html.replace(_CONFIG_SLOT, _CONFIG_SLOT.replace(b"{}", data))
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for match in _INLINE.finditer(html):
        digest = base64.b64encode(hashlib.sha256(match.group(2)).digest()).decode()
        hashes[match.group(1)].append(f"'sha256-{digest}'")
    policy = "; ".join(
        (
            "default-src 'none'",
            "script-src " + " ".join(hashes[b"script"]),
            "style-src " + " ".join(hashes[b"style"]),
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return html, policy


def mount_lab(
    app: App,
    chat: ChatService | None = None,
    *,
    path: str = "/",
    metrics_path: str | None = "/metrics",
) -> None:
    """Serve the wire lab page at ``path`` of ``app``.

    ``chat`` is what ``mount_chat`` returned: with it the resume lab's cut button works (route
    ``POST {path}lab/cut``, for a caller with an API key or the stream's resume token).
    ``metrics_path`` is where the page reads the server's figures each second (None: no live
    view).
    """
    base = path if path.endswith("/") else path + "/"
    cut_path = base + "lab/cut"
    auth = bool(chat is not None and chat.api_keys)
    config: dict[str, object] = {
        "cut": cut_path if chat is not None else None,
        "metrics": metrics_path,
        "auth": auth,
        # Without keys the model list is public: the page fills its model picker from it.
        "models": chat is not None and not auth,
    }
    html, policy = _page(config)
    headers = [
        ("cache-control", "no-cache"),
        ("content-security-policy", policy),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ]

    async def page(request: Request) -> Response:
        return Response(html, headers=headers, content_type="text/html; charset=utf-8")

    app.add_route(path, page, ("GET",))
    if chat is None:
        return
    service = chat

    async def cut(request: Request) -> Response:
        from rawsse.chat.auth import check_api_key, presented_key

        stream_id = service.stream_id_of(request.query.get("stream", ""))
        if not stream_id:
            return JSONResponse({"error": "name the stream: ?stream=ID"}, 400)
        allowed = service.may_resume(request, stream_id) or check_api_key(
            service.api_keys, presented_key(request.headers)
        )
        if not allowed:
            return JSONResponse(
                {"error": "an API key or the stream's resume token is required"},
                401,
                [("www-authenticate", "Bearer")],
            )
        return JSONResponse({"ended": service.end_resumes(stream_id)})

    app.add_route(cut_path, cut, ("POST",))
