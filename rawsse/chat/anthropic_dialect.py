"""The Anthropic Messages wire format: ``message_start`` ... ``message_stop`` events.

Contract: ``ANTHROPIC`` is the dialect of ``POST /v1/messages``. Every frame has ``event:
<type>`` and JSON data whose ``type`` is the same (the anthropic SDK skips frames without an
event name). Its stream writes, as the SDK's ``RawMessageStreamEvent`` types read them:

1. ``message_start`` with the message: ``id`` (``msg_{stream_id}``), ``type: message``,
   ``role: assistant``, ``model``, ``content: []``, ``stop_reason: null``, ``stop_sequence:
   null``, ``usage`` (``input_tokens`` = the prompt estimate, ``output_tokens: 0``); then a
   ``ping``, as Anthropic does.
2. Content blocks, numbered from 0 in the order they begin: a run of text is a ``text`` block,
   a run of reasoning a ``thinking`` block, each tool call a ``tool_use`` block (``id``
   ``toolu_...`` unless the backend gave one, ``name``, ``input: {}``). Each block is
   ``content_block_start``, ``content_block_delta``s (``text_delta``, ``thinking_delta``,
   ``input_json_delta`` with ``partial_json``), and ``content_block_stop`` when the next
   block begins or the message ends. Blocks never interleave, so a tool call's arguments
   cannot continue once another block began (a ``ChatError`` 500 for the backend).
3. At the end: ``message_delta`` (``delta: {stop_reason, stop_sequence: null}``, ``usage:
   {output_tokens}``, cumulative) and ``message_stop``. Stop reasons: stop is ``end_turn``,
   length ``max_tokens``, tool_calls ``tool_use``.
4. ``fail``: ``event: error`` with ``{"type": "error", "error": {"type", "message"}}``; nothing
   follows (the SDK raises on it).

Anthropic has no ``n``; citations are not rendered (its citation objects point into documents,
not URLs). Errors before the stream are ``{"type": "error", "error": {...}}``; the error type
follows the status (400 invalid_request_error, 401 authentication_error, 403
permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500
api_error, 529 overloaded_error). The non-streaming body is a ``message``. Heartbeats are
``event: ping`` frames (without ``id:``).
"""

from __future__ import annotations

from typing import Any

from rawsse.chat.anthropic_request import parse_anthropic
from rawsse.chat.dialect import Dialect, DialectStream
from rawsse.chat.errors import ChatError
from rawsse.chat.request import ChatRequest
from rawsse.chat.transcript import Block, ChoiceState, ToolCallState
from rawsse.sse import encode_json_data

__all__ = ["ANTHROPIC", "AnthropicStream", "anthropic_error_body"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
    503: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def anthropic_error_body(error: ChatError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}``, Anthropic's error body."""
    kind = _ERROR_TYPES.get(
        error.status, "api_error" if error.status >= 500 else "invalid_request_error"
    )
    return {"type": "error", "error": {"type": kind, "message": error.message}}


class AnthropicStream(DialectStream):
    """The frames of one generation as Anthropic Messages stream events."""

    keeps_request = False
    __slots__ = ("_open",)

    def __init__(self, request: ChatRequest, stream_id: str, created: int) -> None:
        super().__init__(request, stream_id, created)
        self._open: Block | None = None  # the block started and not yet stopped

    @property
    def message_id(self) -> str:
        """The message's ``id``: ``msg_{stream_id}``."""
        return f"msg_{self.stream_id}"

    def _tool_id(self, choice: int, index: int) -> str:
        return f"toolu_{self.stream_id}_{index}"

    def _event(self, value: dict[str, Any]) -> bytes:
        return self._json(value, event=value["type"])

    def _message(
        self, content: list[dict[str, Any]], stop_reason: str | None, output_tokens: int
    ) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.request.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.transcript.prompt_tokens,
                "output_tokens": output_tokens,
            },
        }

    def _start(self) -> list[bytes]:
        return [
            self._event({"type": "message_start", "message": self._message([], None, 0)}),
            self._event({"type": "ping"}),
        ]

    def _stop_open(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        index = len(self.transcript.choices[0].blocks) - 1
        return [self._event({"type": "content_block_stop", "index": index})]

    def _begin(self, state: ChoiceState, content_block: dict[str, Any]) -> list[bytes]:
        """Stop the open block (the one before the new last block), start the new last one."""
        frames = []
        if self._open is not None:
            frames.append(
                self._event({"type": "content_block_stop", "index": len(state.blocks) - 2})
            )
        self._open = state.blocks[-1]
        frames.append(
            self._event(
                {
                    "type": "content_block_start",
                    "index": len(state.blocks) - 1,
                    "content_block": content_block,
                }
            )
        )
        return frames

    def _delta(self, state: ChoiceState, delta: dict[str, Any]) -> bytes:
        return self._event(
            {"type": "content_block_delta", "index": len(state.blocks) - 1, "delta": delta}
        )

    def _on_text(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        frames = self._begin(state, {"type": "text", "text": ""}) if new_block else []
        frames.append(self._delta(state, {"type": "text_delta", "text": text}))
        return frames

    def _on_reasoning(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        block = {"type": "thinking", "thinking": "", "signature": ""}
        frames = self._begin(state, block) if new_block else []
        frames.append(self._delta(state, {"type": "thinking_delta", "thinking": text}))
        return frames

    def _on_tool(
        self, state: ChoiceState, call: ToolCallState, first: bool, arguments: str
    ) -> list[bytes]:
        if first:
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            frames = self._begin(state, block)
        elif self._open is None or self._open.tool is not call:
            raise ChatError.server_error(
                f"The model backend continued tool call {call.index} after another content "
                "block began; Anthropic streams cannot interleave blocks."
            )
        else:
            frames = []
        if arguments:
            frames.append(
                self._delta(state, {"type": "input_json_delta", "partial_json": arguments})
            )
        return frames

    def _stop_reason(self) -> str:
        return _STOP_REASONS[self.transcript.choices[0].final_reason()]

    def _finish(self) -> list[bytes]:
        frames = self._stop_open()
        frames.append(
            self._event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop_reason(), "stop_sequence": None},
                    "usage": {"output_tokens": self.transcript.completion_tokens},
                }
            )
        )
        frames.append(self._event({"type": "message_stop"}))
        return frames

    def _fail(self, error: ChatError) -> list[bytes]:
        return [self._event(anthropic_error_body(error))]

    def _response_body(self) -> dict[str, Any]:
        """A ``message`` with every content block, the stop reason and the usage.

        Raises ``ChatError`` 500 when a tool call's arguments are not a JSON object.
        """
        content: list[dict[str, Any]] = []
        state = self.transcript.choices[0]
        cut = state.final_reason() == "length"
        for block in state.blocks:
            if block.tool is not None:
                call = block.tool
                content.append(
                    {
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": call.arguments_object(cut),
                    }
                )
            elif block.kind == "text":
                content.append({"type": "text", "text": block.text})
            else:
                content.append({"type": "thinking", "thinking": block.text, "signature": ""})
        return self._message(content, self._stop_reason(), self.transcript.completion_tokens)


def _parse(body: Any, model: str | None, stream: bool | None) -> ChatRequest:
    return parse_anthropic(body)


ANTHROPIC = Dialect(
    name="anthropic",
    stream_type=AnthropicStream,
    parser=_parse,
    error_renderer=anthropic_error_body,
    heartbeat_frame=encode_json_data({"type": "ping"}, event="ping"),
    key_header="x-api-key",
)
"""``POST /v1/messages``: keys in ``x-api-key`` (or ``Authorization: Bearer``)."""
