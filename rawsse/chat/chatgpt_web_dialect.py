"""The ChatGPT web app's stream format: ``event: delta`` frames of JSON-patch-like operations.

Contract: ``CHATGPT_WEB`` streams an answer the way chatgpt.com's ``/backend-api/conversation``
does (as observed on the wire; there is no published spec), for clients written against it.
Requests are OpenAI Chat Completions bodies (``parse_openai``), with ``n`` 1 only; a body
without ``stream`` streams (``"stream": false`` gets the non-streaming body). The frames:

1. ``event: delta_encoding`` with data ``"v1"``: the operation encoding in use.
2. ``event: delta`` adding the message: ``{"p": "", "o": "add", "v": {"message": {"id",
   "author": {"role": "assistant"}, "content": {"content_type": "text", "parts": [""]},
   "status": "in_progress", "metadata": {"model_slug"}}, "conversation_id"}, "c": 0}``.
3. The first text piece as ``event: delta`` ``{"p": "/message/content/parts/0", "o": "append",
   "v": "..."}``; each later piece as just ``{"v": "..."}`` (same path and operation).
4. At the end, ``event: delta`` with a ``patch`` of operations: status ``finished_successfully``,
   ``end_turn`` true, and ``metadata.finish_details.type`` (``stop`` or ``max_tokens``); then
   ``data: {"type": "message_stream_complete", "conversation_id"}`` and ``data: [DONE]``.
5. ``fail``: ``data: {"error": "<message>", "conversation_id"}`` then ``data: [DONE]``.

Only answer text is rendered: reasoning, tool calls and citations have no place in this
format and are dropped (they still count as completion tokens). The message id is
``{stream_id}`` and the conversation id ``conv-{stream_id}``. The non-streaming body (the web
app has none) is the final message with ``conversation_id``.
"""

from __future__ import annotations

from typing import Any

from rawsse.chat.dialect import Dialect, DialectStream
from rawsse.chat.errors import ChatError
from rawsse.chat.openai_dialect import openai_error_body, streaming_request_parser
from rawsse.chat.request import ChatRequest
from rawsse.chat.transcript import ChoiceState, ToolCallState

__all__ = ["CHATGPT_WEB", "ChatGPTWebStream"]

_TEXT_PATH = "/message/content/parts/0"
_FINISH_TYPES = {"stop": "stop", "length": "max_tokens", "tool_calls": "stop"}


class ChatGPTWebStream(DialectStream):
    """The frames of one generation as ChatGPT web ``delta`` events."""

    keeps_request = False
    __slots__ = ("_appended",)

    def __init__(self, request: ChatRequest, stream_id: str, created: int) -> None:
        if request.n != 1:
            raise ChatError.invalid(
                "The chatgpt-web dialect streams one answer: 'n' must be 1.",
                param="n",
                code="invalid_value",
            )
        super().__init__(request, stream_id, created)
        self._appended = False  # whether a text piece named its path and operation yet

    @property
    def conversation_id(self) -> str:
        """The conversation's id: ``conv-{stream_id}``."""
        return f"conv-{self.stream_id}"

    def _message(self, text: str, status: str, finish: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"model_slug": self.request.model}
        if finish is not None:
            metadata["finish_details"] = {"type": finish}
            metadata["is_complete"] = True
        return {
            "id": self.stream_id,
            "author": {"role": "assistant"},
            "create_time": self.created,
            "content": {"content_type": "text", "parts": [text]},
            "status": status,
            "end_turn": finish is not None,
            "metadata": metadata,
        }

    def _start(self) -> list[bytes]:
        added = {
            "p": "",
            "o": "add",
            "v": {
                "message": self._message("", "in_progress", None),
                "conversation_id": self.conversation_id,
            },
            "c": 0,
        }
        return [self._json("v1", event="delta_encoding"), self._json(added, event="delta")]

    def _on_text(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        if self._appended:
            return [self._json({"v": text}, event="delta")]
        self._appended = True
        return [self._json({"p": _TEXT_PATH, "o": "append", "v": text}, event="delta")]

    def _on_reasoning(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        return []

    def _on_tool(
        self, state: ChoiceState, call: ToolCallState, first: bool, arguments: str
    ) -> list[bytes]:
        return []

    def _finish(self) -> list[bytes]:
        finish = _FINISH_TYPES[self.transcript.choices[0].final_reason()]
        patch = {
            "p": "",
            "o": "patch",
            "v": [
                {"p": "/message/status", "o": "replace", "v": "finished_successfully"},
                {"p": "/message/end_turn", "o": "replace", "v": True},
                {
                    "p": "/message/metadata",
                    "o": "append",
                    "v": {"is_complete": True, "finish_details": {"type": finish}},
                },
            ],
        }
        complete = {"type": "message_stream_complete", "conversation_id": self.conversation_id}
        return [self._json(patch, event="delta"), self._json(complete), self._data("[DONE]")]

    def _fail(self, error: ChatError) -> list[bytes]:
        failure = {"error": error.message, "conversation_id": self.conversation_id}
        return [self._json(failure), self._data("[DONE]")]

    def _response_body(self) -> dict[str, Any]:
        """The finished message, as the stream's patches leave it, with ``conversation_id``."""
        state = self.transcript.choices[0]
        finish = _FINISH_TYPES[state.final_reason()]
        return {
            "message": self._message(state.text, "finished_successfully", finish),
            "conversation_id": self.conversation_id,
        }


CHATGPT_WEB = Dialect(
    name="chatgpt-web",
    stream_type=ChatGPTWebStream,
    parser=streaming_request_parser,
    error_renderer=openai_error_body,
)
"""The ChatGPT web ``delta`` stream; OpenAI request bodies, keys and error bodies."""
