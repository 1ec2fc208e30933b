"""The generic envelope: one self-describing JSON object per ``event: message`` frame.

Contract: ``ENVELOPE`` is a vendor-neutral format for clients that want one shape for every
frame. Requests are OpenAI Chat Completions bodies (``parse_openai``), with ``n`` 1 only. Every
frame is ``event: message`` whose data has all seven keys, ``null`` where unused:

- ``id``: the stream id; ``model``: the request's model;
- ``type``: ``meta`` (information, no answer text), ``text`` (a piece of answer text) or
  ``done`` (the last frame);
- ``text``: the piece (``text``), the whole answer (``done``), else ``null``;
- ``progress``: completion tokens produced so far (an integer);
- ``context``: request facts: at start ``{"prompt_tokens", "max_tokens"}``; at the end
  ``{"usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}``;
- ``metadata``: ``{"created"}`` at start, ``{"reasoning": "..."}``, ``{"tool_call": {"id",
  "name", "arguments"}}`` (a fragment; ``id`` and ``name`` on the first only) or
  ``{"citations": [...]}`` on ``meta`` frames, and ``{"finish_reason"}`` on ``done``.

The stream is one ``meta`` frame, then ``text`` and ``meta`` frames, then one ``done`` frame.
A body without ``stream`` streams; ``"stream": false`` gets the non-streaming body. ``fail``
ends it with a ``done`` frame whose metadata is ``{"finish_reason": "error", "error":
{"status", "message", "type", "code"}}``. The non-streaming body is the ``done`` frame's object.
"""

from __future__ import annotations

from typing import Any, Literal

from rawsse.chat.dialect import Dialect, DialectStream
from rawsse.chat.errors import ChatError
from rawsse.chat.openai_dialect import openai_error_body, streaming_request_parser
from rawsse.chat.request import ChatRequest
from rawsse.chat.transcript import ChoiceState, ToolCallState

__all__ = ["ENVELOPE", "EnvelopeStream"]


class EnvelopeStream(DialectStream):
    """The frames of one generation as generic envelope objects."""

    keeps_request = False
    __slots__ = ()

    keeps_text = True  # the done frame carries the whole answer

    def __init__(self, request: ChatRequest, stream_id: str, created: int) -> None:
        if request.n != 1:
            raise ChatError.invalid(
                "The envelope dialect streams one answer: 'n' must be 1.",
                param="n",
                code="invalid_value",
            )
        super().__init__(request, stream_id, created)

    def _envelope(
        self,
        kind: Literal["meta", "text", "done"],
        text: str | None = None,
        context: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": self.stream_id,
            "type": kind,
            "model": self.request.model,
            "text": text,
            "progress": self.transcript.completion_tokens,
            "context": context,
            "metadata": metadata,
        }

    def _frame(self, envelope: dict[str, Any]) -> list[bytes]:
        return [self._json(envelope, event="message")]

    def _start(self) -> list[bytes]:
        context = {
            "prompt_tokens": self.transcript.prompt_tokens,
            "max_tokens": self.request.max_tokens,
        }
        return self._frame(
            self._envelope("meta", context=context, metadata={"created": self.created})
        )

    def _on_text(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        return self._frame(self._envelope("text", text=text))

    def _on_reasoning(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        return self._frame(self._envelope("meta", metadata={"reasoning": text}))

    def _on_tool(
        self, state: ChoiceState, call: ToolCallState, first: bool, arguments: str
    ) -> list[bytes]:
        fragment: dict[str, Any] = {"id": None, "name": None, "arguments": arguments}
        if first:
            fragment["id"] = call.id
            fragment["name"] = call.name
        return self._frame(self._envelope("meta", metadata={"tool_call": fragment}))

    def _on_citations(self) -> list[bytes]:
        citations = list(self.transcript.citations)
        return self._frame(self._envelope("meta", metadata={"citations": citations}))

    def _done(self) -> dict[str, Any]:
        prompt = self.transcript.prompt_tokens
        completion = self.transcript.completion_tokens
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        state = self.transcript.choices[0]
        return self._envelope(
            "done",
            text=state.text,
            context={"usage": usage},
            metadata={"finish_reason": state.final_reason()},
        )

    def _finish(self) -> list[bytes]:
        return self._frame(self._done())

    def _fail(self, error: ChatError) -> list[bytes]:
        failure = {
            "status": error.status,
            "message": error.message,
            "type": error.type,
            "code": error.code,
        }
        metadata = {"finish_reason": "error", "error": failure}
        return self._frame(self._envelope("done", metadata=metadata))

    def _response_body(self) -> dict[str, Any]:
        return self._done()


ENVELOPE = Dialect(
    name="envelope",
    stream_type=EnvelopeStream,
    parser=streaming_request_parser,
    error_renderer=openai_error_body,
)
"""The generic envelope stream; OpenAI request bodies, keys and error bodies."""
