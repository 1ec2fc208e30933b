"""A vLLM-style OpenAI chat endpoint: Starlette + pydantic + sse-starlette, on uvicorn.

What vLLM's OpenAI server does per request, reduced to the serving path: validate the body into
a pydantic ``ChatCompletionRequest``, then for each token build a pydantic
``ChatCompletionStreamResponse`` and serialise it with ``model_dump_json(exclude_unset=True)``;
the first chunk carries the role, the last one the finish reason, then ``[DONE]``. The model is
the same ``lorem`` filler as rawsse's demo model (``max_tokens`` words, no delay), so the two
servers send the same sequence of chunks. (vLLM itself streams through Starlette's
``StreamingResponse``; sse-starlette here is the stack the issue names.)

Run: ``uvicorn benchmarks.peers.vllm_style:app --http httptools``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

WORDS = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
    "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua",
)


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, str]] | None = None


class ChatCompletionRequest(BaseModel):
    model: str
    messages: list[ChatMessage]
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int = 1


class DeltaMessage(BaseModel):
    role: str | None = None
    content: str | None = None


class ChatCompletionResponseStreamChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionStreamResponse(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionResponseStreamChoice]


def lorem_tokens(count: int) -> list[str]:
    words = [WORDS[i % len(WORDS)] for i in range(count)]
    if words:
        words[0] = words[0].capitalize()
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


async def chat_completions(request: Request) -> EventSourceResponse | JSONResponse:
    try:
        req = ChatCompletionRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error",
                                       "param": None, "code": None}}, status_code=400)
    if req.model != "lorem":
        return JSONResponse({"error": {"message": f"model {req.model!r} not found",
                                       "type": "invalid_request_error", "param": "model",
                                       "code": "model_not_found"}}, status_code=404)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    max_tokens = req.max_tokens or 16

    async def events() -> AsyncIterator[dict[str, str]]:
        def chunk(delta: DeltaMessage, finish: str | None = None) -> str:
            choice = ChatCompletionResponseStreamChoice(index=0, delta=delta, logprobs=None,
                                                        finish_reason=finish)
            return ChatCompletionStreamResponse(id=request_id, object="chat.completion.chunk",
                                                created=created, model=req.model,
                                                choices=[choice]).model_dump_json(
                exclude_unset=True)

        yield {"data": chunk(DeltaMessage(role="assistant", content=""))}
        for token in lorem_tokens(max_tokens):
            yield {"data": chunk(DeltaMessage(content=token))}
        yield {"data": chunk(DeltaMessage(), "length")}
        yield {"data": "[DONE]"}

    return EventSourceResponse(events(), ping=15)


app = Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])
