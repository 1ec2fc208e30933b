"""The Gemini ``generateContent`` wire format: ``GenerateContentResponse`` chunks over SSE.

Contract: ``GEMINI`` is the dialect of ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse``
(and ``:generateContent``, not streaming; the same under ``/v1/``). Its stream writes ``data:``
frames only, each a ``GenerateContentResponse`` in the REST API's camelCase, as google-genai reads
them:

1. A chunk per text or reasoning delta: ``{"candidates": [{"content": {"parts": [{"text"}],
   "role": "model"}, "index": choice}], "modelVersion", "responseId"}``; reasoning parts carry
   ``"thought": true``.
2. At the end, one chunk per candidate, in index order, with ``finishReason`` (stop and
   tool_calls are ``STOP``, length ``MAX_TOKENS``) and its parts: its tool calls, whole, as
   ``{"functionCall": {"name", "args"}}`` (Gemini does not stream arguments; they must be a
   JSON object), or else one empty text part. The last chunk carries ``usageMetadata``
   (``promptTokenCount``, ``candidatesTokenCount``, ``totalTokenCount``).
3. ``fail``: ``data: {"error": {"code", "message", "status"}}``, Gemini's error body, which
   google-genai raises as ``APIError``. Gemini has no ``[DONE]``: the stream just ends.

Frames carry no ``id:`` line and heartbeats are a bare blank line, because google-genai's
reader treats every line other than ``data: ...`` and blank as a piece of raw JSON (an ``id:``
or ``:`` line would reach its JSON parser); the frames are still numbered (``last_event_id``),
so the replay log works. Errors before the stream are ``{"error": {"code", "message",
"status"}}`` with Google's canonical status names. The non-streaming body is one
``GenerateContentResponse`` with every candidate whole.
"""

from __future__ import annotations

from typing import Any

from rawsse.chat.dialect import Dialect, DialectStream
from rawsse.chat.errors import ChatError
from rawsse.chat.gemini_request import parse_gemini
from rawsse.chat.request import ChatRequest
from rawsse.chat.transcript import ChoiceState, ToolCallState

__all__ = ["GEMINI", "GeminiStream", "gemini_error_body"]

_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


def gemini_error_body(error: ChatError) -> dict[str, Any]:
    """``{"error": {"code", "message", "status"}}``, Google's error body."""
    status = _STATUSES.get(error.status, "INTERNAL" if error.status >= 500 else "INVALID_ARGUMENT")
    return {"error": {"code": error.status, "message": error.message, "status": status}}


def _function_call(call: ToolCallState, state: ChoiceState) -> dict[str, Any]:
    args = call.arguments_object(cut=state.final_reason() == "length")
    return {"functionCall": {"name": call.name, "args": args}}


class GeminiStream(DialectStream):
    """The frames of one generation as ``GenerateContentResponse`` chunks."""

    keeps_request = False
    __slots__ = ()

    event_ids = False
    # google-genai reads every line that is not ``data: ...`` as JSON: a retry line breaks it.
    carries_retry = False

    def _response(self, candidates: list[dict[str, Any]], usage: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"candidates": candidates}
        if usage:
            prompt = self.transcript.prompt_tokens
            completion = self.transcript.completion_tokens
            body["usageMetadata"] = {
                "promptTokenCount": prompt,
                "candidatesTokenCount": completion,
                "totalTokenCount": prompt + completion,
            }
        body["modelVersion"] = self.request.model
        body["responseId"] = self.stream_id
        return body

    def _candidate(
        self, state: ChoiceState, parts: list[dict[str, Any]], final: bool
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if final:
            candidate["finishReason"] = _FINISH_REASONS[state.final_reason()]
        candidate["index"] = state.index
        return candidate

    def _on_text(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        candidate = self._candidate(state, [{"text": text}], False)
        return [self._json(self._response([candidate], False))]

    def _on_reasoning(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        candidate = self._candidate(state, [{"text": text, "thought": True}], False)
        return [self._json(self._response([candidate], False))]

    def _on_tool(
        self, state: ChoiceState, call: ToolCallState, first: bool, arguments: str
    ) -> list[bytes]:
        return []  # sent whole in the candidate's final chunk

    def _finish(self) -> list[bytes]:
        # Build every chunk before numbering any, so a bad tool call leaves the stream open.
        choices = self.transcript.choices
        last = len(choices) - 1
        responses = []
        for state in choices:
            parts = [_function_call(call, state) for call in state.tool_calls.values()] or [
                {"text": ""}
            ]
            candidate = self._candidate(state, parts, True)
            responses.append(self._response([candidate], state.index == last))
        return [self._json(response) for response in responses]

    def _fail(self, error: ChatError) -> list[bytes]:
        return [self._json(gemini_error_body(error))]

    def _response_body(self) -> dict[str, Any]:
        """A ``GenerateContentResponse`` with every candidate whole, and the usage.

        Raises ``ChatError`` 500 when a tool call's arguments are not a JSON object.
        """
        candidates = []
        for state in self.transcript.choices:
            parts: list[dict[str, Any]] = []
            for block in state.blocks:
                if block.tool is not None:
                    parts.append(_function_call(block.tool, state))
                elif block.kind == "text":
                    parts.append({"text": block.text})
                else:
                    parts.append({"text": block.text, "thought": True})
            candidates.append(self._candidate(state, parts or [{"text": ""}], True))
        return self._response(candidates, True)


def _parse(body: Any, model: str | None, stream: bool | None) -> ChatRequest:
    if model is None or stream is None:
        raise TypeError("the Gemini dialect takes the model and stream from the URL")
    return parse_gemini(model, body, stream=stream)


GEMINI = Dialect(
    name="gemini",
    stream_type=GeminiStream,
    parser=_parse,
    error_renderer=gemini_error_body,
    heartbeat_frame=b"\n",
    key_header="x-goog-api-key",
    key_query="key",
)
"""Gemini ``generateContent``: keys in ``x-goog-api-key`` or ``?key=``."""
