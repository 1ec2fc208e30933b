"""The vendors' SDKs against how ``rawsse serve`` starts and ends chat streams.

- ``--retry-ms``: the hint travels in the block of a chat stream's first frame, never in a block
  of its own (the openai SDK's decoder turns a block that only set ``retry`` into an event with
  empty data and fails on ``json.loads("")``), and not at all on the Gemini routes (google-genai
  reads every line that is not ``data:`` as JSON).
- SIGTERM mid-stream: a stream the model did not finish ends with the dialect's in-band error
  frame, so every SDK raises instead of returning half an answer as a whole one.

``rawsse serve`` runs as a subprocess on the backend under test; the SDKs' sync clients run in a
worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from google.genai import errors as genai_errors

from tests.chat_support import (
    ANTHROPIC_VERSION,
    USER_TEXT,
    ServedApp,
    anthropic_body,
    anthropic_client,
    gemini_client,
    get,
    in_thread,
    openai_body,
    openai_client,
    post,
    served_app,
    stream_id_of,
)

pytestmark = pytest.mark.anyio

MESSAGES: Any = [{"role": "user", "content": USER_TEXT}]
GEMINI_STREAM = "/v1beta/models/echo:streamGenerateContent?alt=sse"
# Long enough that SIGTERM always lands mid-stream: 5,000 tokens 20 ms apart.
LONG_ANSWER = 5000


# -- --retry-ms -------------------------------------------------------------------------------


def _sdk_answers(app: ServedApp) -> tuple[str, str, str]:
    """The echo answer as the openai, anthropic and google-genai SDKs stream it."""
    chunks = openai_client(app).chat.completions.create(
        model="echo", messages=MESSAGES, stream=True
    )
    openai_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    with anthropic_client(app).messages.stream(
        model="echo", max_tokens=100, messages=MESSAGES
    ) as stream:
        anthropic_text = stream.get_final_text()
    gemini = gemini_client(app).models.generate_content_stream(model="echo", contents=USER_TEXT)
    gemini_text = "".join(chunk.text or "" for chunk in gemini)
    return openai_text, anthropic_text, gemini_text


async def test_retry_hint_travels_with_the_first_frame_and_every_sdk_reads_it(
    anyio_backend: str,
) -> None:
    with served_app("--backend", anyio_backend, "--retry-ms", "250", "--token-delay", "0") as app:
        assert await in_thread(_sdk_answers, app) == (USER_TEXT, USER_TEXT, USER_TEXT)
        openai_answer = await post(app, "/v1/chat/completions", openai_body(stream=True))
        anthropic_answer = await post(
            app,
            "/v1/messages",
            anthropic_body(stream=True),
            {"anthropic-version": ANTHROPIC_VERSION},
        )
        gemini_answer = await post(app, GEMINI_STREAM, {"contents": [{"parts": [{"text": "x"}]}]})
        web = await post(app, "/backend-api/conversation", openai_body())
        envelope = await post(app, "/v1/envelope/completions", openai_body())
        resumed = await get(app, f"/v1/chat/completions/{stream_id_of(openai_answer)}/events")
    # In the first frame's block, before its other fields: one block, one event.
    assert openai_answer.body.startswith(b"retry: 250\nid: 1\ndata: {")
    assert anthropic_answer.body.startswith(b"retry: 250\nevent: message_start\nid: 1\n")
    assert web.body.startswith(b"retry: 250\nevent: delta_encoding\nid: 1\n")
    assert envelope.body.startswith(b"retry: 250\nevent: message\nid: 1\n")
    for answer in (openai_answer, anthropic_answer, web, envelope):
        assert answer.body.count(b"retry:") == 1
        assert answer.events[0].retry == 250
    assert gemini_answer.status == 200
    assert b"retry" not in gemini_answer.body
    # The resume route is for EventSource-style clients: the hint comes first, on its own
    # (the replayed first frame carries its own copy).
    assert resumed.body.startswith(b"retry: 250\n\nretry: 250\nid: 1\n")


# -- SIGTERM mid-stream -----------------------------------------------------------------------


def _drain(chunks: Iterator[Any]) -> None:
    for _ in chunks:
        pass


def _cut_by_sigterm(app: ServedApp) -> tuple[Any, Any, Any]:
    """Start a long answer in each SDK, read a little of each, SIGTERM the server, read on:
    returns the three errors raised."""
    openai_chunks = iter(
        openai_client(app).chat.completions.create(
            model="lorem", messages=MESSAGES, max_tokens=LONG_ANSWER, stream=True
        )
    )
    anthropic_events = iter(
        anthropic_client(app).messages.create(
            model="lorem", messages=MESSAGES, max_tokens=LONG_ANSWER, stream=True
        )
    )
    gemini_chunks = iter(
        gemini_client(app).models.generate_content_stream(
            model="lorem", contents="hi", config={"max_output_tokens": LONG_ANSWER}
        )
    )
    for _ in range(3):  # each stream is open and producing
        next(openai_chunks)
        next(anthropic_events)
        next(gemini_chunks)
    app.stop()  # SIGTERM; returns once the server exited
    errors = []
    for chunks, kind in (
        (openai_chunks, openai.APIError),
        (anthropic_events, anthropic.APIStatusError),
        (gemini_chunks, genai_errors.APIError),
    ):
        with pytest.raises(kind) as raised:
            _drain(chunks)
        errors.append(raised.value)
    return errors[0], errors[1], errors[2]


@pytest.mark.parametrize("resume_grace", ["0", "5"], ids=["inline", "background"])
async def test_sigterm_mid_stream_ends_with_the_error_frame_every_sdk_raises(
    anyio_backend: str, resume_grace: str
) -> None:
    args = ("--backend", anyio_backend, "--token-delay", "0.02", "--resume-grace", resume_grace)
    with served_app(*args) as app:
        openai_error, anthropic_error, gemini_error = await in_thread(_cut_by_sigterm, app)
        assert app.proc.returncode == 0
    assert openai_error.code == "server_shutting_down"
    assert "shutting down" in openai_error.message
    assert anthropic_error.body["error"]["type"] == "overloaded_error"
    assert "shutting down" in anthropic_error.body["error"]["message"]
    assert gemini_error.code == 503
    assert gemini_error.status == "UNAVAILABLE"
