"""The OpenAI Chat Completions wire format: ``chat.completion.chunk`` frames, ``data: [DONE]``.

Contract: ``OPENAI`` is the dialect of ``POST /v1/chat/completions``. Its stream writes, field
for field as the openai SDK's ``ChatCompletionChunk`` reads them (``data:`` only, no ``event:``):

1. At start, for each choice in index order, a chunk whose delta is ``{"role": "assistant",
   "content": ""}``: the role comes first, once per choice.
2. A chunk per delta, for the delta's choice: ``{"content"}``, ``{"reasoning_content"}`` (the
   field DeepSeek and vLLM use), or ``{"tool_calls": [...]}`` where a call's first fragment
   carries ``index``, ``id``, ``type: "function"`` and ``function.name`` (and any arguments),
   later fragments only ``index`` and ``function.arguments``. ``n > 1`` interleaves choices in
   the order the backend yields them.
3. One chunk per choice with an empty delta and its ``finish_reason`` (stop, length,
   tool_calls), when the backend yields ``Finish`` or, for choices it did not finish, at the end.
4. With ``stream_options.include_usage``: every chunk has ``"usage": null``, and a last chunk
   with ``"choices": []`` carries the usage. Then ``data: [DONE]``.
5. Perplexity style: once the backend yields ``Citations``, every later chunk (and the
   non-streaming body) carries ``"citations": [urls]``.
6. ``fail``: ``data: {"error": {"message", "type", "param", "code"}}`` then ``data: [DONE]``
   (the openai SDK raises ``APIError`` on it).

Every chunk has ``id`` (``chatcmpl-{stream_id}``), ``object``, ``created``, ``model`` and
``system_fingerprint``; every choice ``index``, ``delta``, ``logprobs: null`` and
``finish_reason``. Errors before the stream are ``{"error": {...}}`` with the status. The
non-streaming body is a ``chat.completion``.
"""

from __future__ import annotations

from typing import Any

from rawsse.chat.dialect import Dialect, DialectStream
from rawsse.chat.errors import ChatError
from rawsse.chat.openai_request import parse_openai
from rawsse.chat.request import ChatRequest
from rawsse.chat.transcript import ChoiceState, ToolCallState

__all__ = [
    "OPENAI",
    "OpenAIStream",
    "openai_error_body",
    "openai_models_body",
    "openai_request_parser",
    "streaming_request_parser",
]

SYSTEM_FINGERPRINT = "fp_rawsse"
"""The ``system_fingerprint`` of every answer: the backend configuration is rawsse's."""


def openai_error_body(error: ChatError) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``, OpenAI's error body."""
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


def openai_models_body(models: list[str], created: int = 0) -> dict[str, Any]:
    """The ``GET /v1/models`` answer listing ``models``, owned by ``rawsse``."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "rawsse"}
            for name in models
        ],
    }


class OpenAIStream(DialectStream):
    """The frames of one generation as ``chat.completion.chunk`` events."""

    keeps_request = False
    __slots__ = ("_cited",)

    def __init__(self, request: ChatRequest, stream_id: str, created: int) -> None:
        super().__init__(request, stream_id, created)
        self._cited = False  # once the backend yields Citations, every chunk carries them

    @property
    def completion_id(self) -> str:
        """The ``id`` of every chunk: ``chatcmpl-{stream_id}``."""
        return f"chatcmpl-{self.stream_id}"

    def _head(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        """A chunk: the fields every chunk repeats, in OpenAI's order, around ``choices``
        (made per chunk: a held stream keeps no template)."""
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if self.request.include_usage:
            chunk["usage"] = None
        if self._cited:
            chunk["citations"] = list(self.transcript.citations)
        return chunk

    def _chunk(self, index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return self._json(
            self._head(
                [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
            )
        )

    def _start(self) -> list[bytes]:
        return [
            self._chunk(state.index, {"role": "assistant", "content": ""})
            for state in self.transcript.choices
        ]

    def _on_text(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        return [self._chunk(state.index, {"content": text})]

    def _on_reasoning(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        return [self._chunk(state.index, {"reasoning_content": text})]

    def _on_tool(
        self, state: ChoiceState, call: ToolCallState, first: bool, arguments: str
    ) -> list[bytes]:
        if first:
            fragment: dict[str, Any] = {
                "index": call.index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": arguments},
            }
        else:
            fragment = {"index": call.index, "function": {"arguments": arguments}}
        return [self._chunk(state.index, {"tool_calls": [fragment]})]

    def _on_finish(self, state: ChoiceState) -> list[bytes]:
        return [self._chunk(state.index, {}, state.final_reason())]

    def _on_citations(self) -> list[bytes]:
        self._cited = True
        return []

    def _usage(self) -> dict[str, int]:
        prompt = self.transcript.prompt_tokens
        completion = self.transcript.completion_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _finish(self) -> list[bytes]:
        frames: list[bytes] = []
        for state in self.transcript.choices:
            if state.finish_reason is None:
                state.finish_reason = state.final_reason()
                frames += self._on_finish(state)
        if self.request.include_usage:
            chunk = self._head([])
            chunk["usage"] = self._usage()
            frames.append(self._json(chunk))
        frames.append(self._data("[DONE]"))
        return frames

    def _fail(self, error: ChatError) -> list[bytes]:
        return [self._json(openai_error_body(error)), self._data("[DONE]")]

    def _response_body(self) -> dict[str, Any]:
        """A ``chat.completion`` with each choice's whole message, and the usage."""
        choices = []
        for state in self.transcript.choices:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": state.text if state.text or not state.tool_calls else None,
                "refusal": None,
            }
            if state.reasoning:
                message["reasoning_content"] = state.reasoning
            if state.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in state.tool_calls.values()
                ]
            choices.append(
                {
                    "index": state.index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": state.final_reason(),
                }
            )
        body: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
            "usage": self._usage(),
        }
        if self.transcript.citations:
            body["citations"] = list(self.transcript.citations)
        return body


def openai_request_parser(body: Any, model: str | None, stream: bool | None) -> ChatRequest:
    """``parse_openai`` as a ``Dialect.parser``: the model and stream flag are in the body."""
    return parse_openai(body)


def streaming_request_parser(body: Any, model: str | None, stream: bool | None) -> ChatRequest:
    """``parse_openai`` for the streaming-first formats (ChatGPT web, the envelope): a body
    without ``stream`` streams, as their clients expect; ``"stream": false`` gets the finished
    answer as one JSON object."""
    if isinstance(body, dict) and body.get("stream") is None:
        body = {**body, "stream": True}
    return parse_openai(body)


OPENAI = Dialect(
    name="openai",
    stream_type=OpenAIStream,
    parser=openai_request_parser,
    error_renderer=openai_error_body,
)
"""``POST /v1/chat/completions``: keys in ``Authorization: Bearer``; heartbeats ``:`` comments."""
