"""``mount_lab``: the page in any App with one call, and its cut route.

Raw HTTP on asyncio and trio; the page's behaviour in a browser is ``test_lab_browser.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest

from rawsse.app import App
from rawsse.chat.demo import demo_models
from rawsse.chat.mount import mount_chat
from rawsse.lab import mount_lab
from tests.chat_support import KEY, ChatServer, bearer, get, in_thread, openai_body, post, request
from tests.support import running_server

pytestmark = pytest.mark.anyio


def config_of(html: bytes) -> dict[str, object]:
    found = re.search(rb'<script type="application/json" id="lab-config">(.*?)</script>', html)
    assert found
    value = json.loads(found.group(1))
    assert isinstance(value, dict)
    return value


def inline_hashes(html: bytes, tag: bytes) -> list[str]:
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", html, re.DOTALL)
    ]


async def test_any_app_serves_the_page_with_one_call(anyio_backend: str) -> None:
    app = App()
    mount_lab(app, path="/lab", metrics_path=None)
    async with running_server(app) as server:
        srv = ChatServer(server)
        try:
            page = await get(srv, "/lab")
            head = await request(srv, "HEAD", "/lab")
            cut = await post(srv, "/lab/lab/cut?stream=x", {})
        finally:
            await in_thread(srv.close_clients)
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.body.startswith(b"<!doctype html>")
    assert config_of(page.body) == {"cut": None, "metrics": None, "auth": False, "models": False}
    # Its one script and one style sheet are allowed by hash; nothing else runs or loads.
    policy = page.headers["content-security-policy"]
    assert f"script-src {' '.join(inline_hashes(page.body, b'script'))};" in policy
    assert f"style-src {' '.join(inline_hashes(page.body, b'style'))};" in policy
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert b"http://" not in page.body.replace(b"http://www.w3.org/2000/svg", b"")
    assert b"https://" not in page.body
    assert head.status == 200 and head.body == b""
    assert cut.status == 404  # no chat service, no cut route


async def test_the_cut_route_needs_a_key_or_the_streams_token(anyio_backend: str) -> None:
    app = App()
    chat = mount_chat(app, demo_models(0.0), api_keys=[KEY])
    mount_lab(app, chat)
    async with running_server(app) as server:
        srv = ChatServer(server)
        try:
            page = await get(srv, "/")
            stream = await post(srv, "/v1/chat/completions", openai_body(), bearer())
            stream_id = stream.headers["x-rawsse-stream-id"]
            token = stream.headers["x-rawsse-resume-token"]
            anonymous = await post(srv, f"/lab/cut?stream={stream_id}", {})
            other_token = await post(srv, f"/lab/cut?stream=other&resume_token={token}", {})
            with_token = await post(srv, f"/lab/cut?stream={stream_id}&resume_token={token}", {})
            with_key = await post(srv, f"/lab/cut?stream={stream_id}", {}, bearer())
            unnamed = await post(srv, "/lab/cut", {}, bearer())
        finally:
            await in_thread(srv.close_clients)
    assert config_of(page.body) == {
        "cut": "/lab/cut",
        "metrics": "/metrics",
        "auth": True,
        "models": False,
    }
    assert (anonymous.status, other_token.status) == (401, 401)
    # Nothing was following the stream: the cut ended no response.
    assert (with_token.status, with_token.json()) == (200, {"ended": 0})
    assert (with_key.status, with_key.json()) == (200, {"ended": 0})
    assert unnamed.status == 400
