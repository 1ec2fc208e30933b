"""Resume tokens: a browser resumes a keyed stream without an API key in its URL.

``EventSource`` cannot send headers, so with API keys configured every chat stream's response
carries ``x-rawsse-resume-token`` and the resume route accepts it as ``?resume_token=``: for
that stream only, compared in constant time, never logged. ``ChatService.end_resumes`` ends
the resume responses following a stream (the wire lab's cut button). The browser side of
both is in ``test_lab_browser.py``; here, raw HTTP on asyncio and trio.
"""

from __future__ import annotations

import json
import subprocess
import tempfile

import httpx
import pytest

from rawsse.chat.auth import check_resume_token, resume_secret, resume_token
from tests.chat_support import (
    KEY,
    ProbeModel,
    anthropic_body,
    anthropic_headers,
    bearer,
    chat_server,
    data_of,
    demo_server,
    get,
    int_ids,
    open_stream,
    openai_body,
    post,
    stream_id_of,
)
from tests.tools_support import REPO_ROOT, rawsse_command

COMPLETIONS = "/v1/chat/completions"
TOKEN = "x-rawsse-resume-token"


def events_path(stream_id: str, token: str | None = None) -> str:
    path = f"{COMPLETIONS}/{stream_id}/events"
    return path if token is None else f"{path}?resume_token={token}"


def test_tokens_are_per_stream_and_agree_across_processes_sharing_the_keys() -> None:
    secret = resume_secret(["sk-a", "sk-b"])
    assert secret is not None
    # Another worker configured with the same keys, in another order, makes the same token.
    assert resume_secret(["sk-b", "sk-a"]) == secret
    token = resume_token(secret, "stream-1")
    assert len(token) == 43 and token.isascii()
    assert "sk-a" not in token and "sk-b" not in token
    assert check_resume_token(secret, "stream-1", token)
    assert not check_resume_token(secret, "stream-2", token)
    assert not check_resume_token(secret, "stream-1", token[:-1])
    assert not check_resume_token(secret, "stream-1", None)
    assert not check_resume_token(None, "stream-1", token)
    assert not check_resume_token(secret, "stream-1", "\udcff not ascii é")
    assert resume_token(resume_secret(["sk-c"]) or b"", "stream-1") != token
    assert resume_secret([]) is None


@pytest.mark.anyio
async def test_the_token_resumes_its_stream_without_a_key(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        original = await post(srv, COMPLETIONS, openai_body(), bearer())
        stream_id = stream_id_of(original)
        token = original.headers[TOKEN]
        resumed = await get(srv, events_path(stream_id, token), {"last-event-id": "2"})
        # The vendor id (chatcmpl-...) names the same stream; the token is the stream's.
        chunk_id = data_of(original.events)[0]["id"]
        by_vendor_id = await get(srv, events_path(chunk_id, token))
        no_token = await get(srv, events_path(stream_id))
    assert original.status == 200
    assert resumed.status == 200, resumed.body
    assert resumed.headers[TOKEN] == token
    assert int_ids(resumed.events) == list(range(3, len(original.events) + 1))
    assert [e.data for e in resumed.events] == [e.data for e in original.events[2:]]
    assert by_vendor_id.status == 200
    assert [e.data for e in by_vendor_id.events] == [e.data for e in original.events]
    assert no_token.status == 401


@pytest.mark.anyio
async def test_a_token_opens_its_own_stream_only_and_nothing_else(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        first = await post(srv, COMPLETIONS, openai_body(), bearer())
        second = await post(srv, "/v1/messages", anthropic_body(), anthropic_headers(KEY))
        first_token = first.headers[TOKEN]
        second_id = stream_id_of(second)
        other_stream = await get(srv, events_path(second_id, first_token))
        wrong = await get(srv, events_path(stream_id_of(first), first_token[:-2] + "AA"))
        # Not a key: the chat routes and the model list do not take it.
        as_key = await post(srv, f"{COMPLETIONS}?resume_token={first_token}", openai_body())
        models = await get(srv, f"/v1/models?resume_token={first_token}")
        # An Anthropic stream's token resumes it on the (OpenAI-shaped) resume route.
        anthropic = await get(srv, events_path(second_id, second.headers[TOKEN]))
    assert other_stream.status == 401
    assert wrong.status == 401
    # Said as what it is: a token that does not fit, not a missing API key.
    for refused in (other_stream, wrong):
        error = json.loads(refused.body)["error"]
        assert (error["code"], error["param"]) == ("invalid_resume_token", "resume_token")
    assert json.loads(as_key.body)["error"]["code"] == "missing_api_key"
    assert as_key.status == 401
    assert models.status == 401
    assert anthropic.status == 200
    assert [e.data for e in anthropic.events] == [e.data for e in second.events]


@pytest.mark.anyio
async def test_no_keys_no_token(anyio_backend: str) -> None:
    async with demo_server() as srv:
        answer = await post(srv, COMPLETIONS, openai_body())
        resumed = await get(srv, events_path(stream_id_of(answer)))
    assert TOKEN not in answer.headers
    assert resumed.status == 200


@pytest.mark.anyio
async def test_end_resumes_ends_the_followers_and_they_come_back(anyio_backend: str) -> None:
    """The cut: the resume response ends cleanly; the stream and its first client go on; a
    client coming back with Last-Event-ID gets the rest, with no gap and no duplicate."""
    probe = ProbeModel(tokens=6, delay_s=0, gate_after=3)
    async with chat_server({"probe": probe}, api_keys=(KEY,)) as srv:
        assert srv.service is not None
        async with open_stream(
            srv, COMPLETIONS, body=openai_body("probe"), headers=bearer()
        ) as first:
            await first.read_events(4)  # the role chunk and t0..t2; the probe waits at t3
            stream_id = stream_id_of(first)
            token = first.headers[TOKEN]
            async with open_stream(srv, events_path(stream_id, token), method="GET") as follower:
                seen = await follower.read_events(4)
                assert srv.service.end_resumes(stream_id) == 1
                seen = await follower.read_to_end()
            assert int_ids(seen) == [1, 2, 3, 4]
            assert srv.service.end_resumes(stream_id) == 0
            probe.gate.set()
            whole = await first.read_to_end()
            rest = await get(srv, events_path(stream_id, token), {"last-event-id": "4"})
    assert int_ids(seen) + int_ids(rest.events) == list(range(1, len(whole) + 1))
    assert probe.completed


def test_the_token_never_reaches_the_logs() -> None:
    """A ``rawsse serve --api-key`` subprocess at debug level: the token and the key it was
    resumed without appear in no log line; the access log shows the query redacted."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            rawsse_command("serve", "--port", "0", "--api-key", KEY, "--log-level", "debug"),
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO_ROOT,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            assert line.startswith("rawsse listening on "), line
            base = line.split()[-1]
            with httpx.Client(base_url=base, timeout=10) as client:
                answer = client.post(COMPLETIONS, json=openai_body(), headers=bearer())
                token = answer.headers[TOKEN]
                stream_id = answer.headers["x-rawsse-stream-id"]
                resumed = client.get(events_path(stream_id, token))
                assert resumed.status_code == 200
                wrong = client.get(events_path(stream_id, "x" + token))
                assert wrong.status_code == 401
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        log.seek(0)
        logged = log.read().decode()
    assert "/events?resume_token=[redacted]" in logged, logged[-2000:]
    assert token not in logged
    assert KEY not in logged
