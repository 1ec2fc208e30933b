"""Stream grammar validators: does a sequence of SSE events follow OpenAI's or Anthropic's rules?

Contract: ``OpenAIGrammar`` and ``AnthropicGrammar`` take parsed events one at a time
(``feed``; anything with ``data``, ``event`` and ``id`` attributes, such as ``rawsse.sse.Event``)
and ``end()`` when the stream ended; ``check_openai_stream`` and ``check_anthropic_stream`` run
them over a whole list. A violation raises ``GrammarError`` (an ``AssertionError``, so tests
read naturally) whose message names the event's 1-based position and the rule. They check the
wire rules the vendors' SDKs rely on, not the content. With ``require_ids``, every event must
carry an ``id:`` that is one more than the previous one (rawsse's resume numbering).

OpenAI (``chat.completion.chunk`` over ``data:``, ending with ``data: [DONE]``):

1. Every event is unnamed (type ``message``); its data is ``[DONE]`` or a JSON object.
2. ``[DONE]`` comes exactly once, last.
3. An ``{"error": ...}`` object may come anywhere; only ``[DONE]`` may follow it.
4. Chunks have ``object: chat.completion.chunk`` and the same ``id``, ``created``, ``model``.
5. A choice's first delta has ``role: assistant``; later deltas have no role.
6. A choice gets one ``finish_reason`` (stop, length, tool_calls, content_filter,
   function_call) and no delta after it.
7. A tool call's first fragment has ``id``, ``type: function`` and ``function.name``; later
   fragments have none of them.
8. The usage chunk has ``choices: []`` and a ``usage`` object whose total is the sum; it
   comes at most once, after every choice finished, and only ``[DONE]`` follows it. Other
   chunks have no usage (``null``) and at least one choice.
9. At the end, ``[DONE]`` was seen and every choice that appeared finished (unless an error
   frame came).

Anthropic (``event: <type>`` frames whose data has the same ``type``):

1. ``ping`` may come anywhere before the end; ``error`` may come anywhere, and nothing after.
2. ``message_start`` comes first, once, with an empty assistant ``message`` (``content: []``,
   ``stop_reason: null``) and usage.
3. Content blocks are started with ``index`` 0, 1, 2 ... in order, one open at a time; deltas
   and the stop name the open block; a delta's type suits its block (``text_delta`` for text,
   ``thinking_delta``/``signature_delta`` for thinking, ``input_json_delta`` for tool_use); a
   tool_use block starts with ``input: {}`` and its ``partial_json`` pieces join to a JSON
   object (or nothing).
4. ``message_delta`` comes once, with no block open, a valid ``stop_reason`` and
   ``usage.output_tokens``; then ``message_stop``, last.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from rawsse.jsonio import JSONDecodeError, loads

__all__ = [
    "AnthropicGrammar",
    "EventLike",
    "GrammarError",
    "OpenAIGrammar",
    "check_anthropic_stream",
    "check_openai_stream",
]

_OPENAI_FINISH = ("stop", "length", "tool_calls", "content_filter", "function_call")
_ANTHROPIC_STOP = (
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
)
_BLOCK_DELTAS = {
    "text": ("text_delta", "citations_delta"),
    "thinking": ("thinking_delta", "signature_delta"),
    "tool_use": ("input_json_delta",),
    "server_tool_use": ("input_json_delta",),
}


class GrammarError(AssertionError):
    """A stream broke its vendor's grammar; the message names the event and the rule."""


class EventLike(Protocol):
    """What the validators read of an event (``rawsse.sse.Event`` has it)."""

    @property
    def data(self) -> str:
        """The event's data."""

    @property
    def event(self) -> str:
        """The event type (``message`` when unnamed)."""

    @property
    def id(self) -> str | None:
        """The event's own ``id:`` field, if any."""


class _Grammar:
    """Shared bookkeeping: event positions, id numbering, JSON decoding."""

    def __init__(self, require_ids: bool) -> None:
        self.require_ids = require_ids
        self.position = 0
        self._last_id: int | None = None

    def fail(self, message: str) -> GrammarError:
        return GrammarError(f"event {self.position}: {message}")

    def _check_id(self, event: EventLike) -> None:
        if not self.require_ids:
            return
        if event.id is None or not event.id.isdigit():
            raise self.fail(f"expected a numeric id: line, got {event.id!r}")
        number = int(event.id)
        if self._last_id is not None and number != self._last_id + 1:
            raise self.fail(f"id {number} does not follow id {self._last_id}")
        self._last_id = number

    def _object(self, event: EventLike) -> dict[str, Any]:
        try:
            value = loads(event.data)
        except JSONDecodeError:
            raise self.fail(f"data is not JSON: {event.data[:80]!r}") from None
        if not isinstance(value, dict):
            raise self.fail(f"data is not a JSON object: {event.data[:80]!r}")
        return value


class OpenAIGrammar(_Grammar):
    """Incremental validator of an OpenAI Chat Completions stream (rules in the module doc)."""

    def __init__(self, *, require_ids: bool = False) -> None:
        super().__init__(require_ids)
        self.done = False
        self.errored = False
        self.usage_seen = False
        self._head: tuple[Any, Any, Any] | None = None
        self._seen: set[int] = set()
        self._finished: set[int] = set()
        self._calls: set[tuple[int, int]] = set()

    def feed(self, event: EventLike) -> None:
        """Check the next event."""
        self.position += 1
        if self.done:
            raise self.fail("event after data: [DONE]")
        if event.event != "message":
            raise self.fail(f"OpenAI chunks are unnamed, got event type {event.event!r}")
        self._check_id(event)
        if event.data == "[DONE]":
            self.done = True
            return
        value = self._object(event)
        if self.errored:
            raise self.fail("only data: [DONE] may follow the error frame")
        if "error" in value:
            self._check_error(value["error"])
            self.errored = True
            return
        if self.usage_seen:
            raise self.fail("chunk after the usage chunk")
        self._check_chunk(value)

    def _check_error(self, error: Any) -> None:
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            raise self.fail("the error frame's error has no message")

    def _check_chunk(self, chunk: dict[str, Any]) -> None:
        if chunk.get("object") != "chat.completion.chunk":
            raise self.fail(f"object is {chunk.get('object')!r}, not 'chat.completion.chunk'")
        head = (chunk.get("id"), chunk.get("created"), chunk.get("model"))
        if (
            not isinstance(head[0], str)
            or not isinstance(head[1], int)
            or not isinstance(head[2], str)
        ):
            raise self.fail("a chunk needs a string id, an integer created and a string model")
        if self._head is None:
            self._head = head
        elif head != self._head:
            raise self.fail(f"(id, created, model) changed from {self._head} to {head}")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise self.fail("choices is not an array")
        usage = chunk.get("usage")
        if not choices:
            if usage is None:
                raise self.fail("chunk with no choices and no usage")
            self._check_usage(usage)
            return
        if usage is not None:
            raise self.fail("usage on a chunk with choices (it belongs on its own last chunk)")
        indexes = set()
        for choice in choices:
            index = self._check_choice(choice)
            if index in indexes:
                raise self.fail(f"choice {index} twice in one chunk")
            indexes.add(index)

    def _check_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            raise self.fail("usage is not an object")
        counts: list[int] = []
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            count = usage.get(key)
            if not isinstance(count, int) or count < 0:
                raise self.fail(f"usage.{key} is not a token count: {count!r}")
            counts.append(count)
        prompt, completion, total = counts
        if prompt + completion != total:
            raise self.fail(f"total_tokens {total} is not {prompt} + {completion}")
        unfinished = sorted(self._seen - self._finished)
        if unfinished:
            raise self.fail(f"usage chunk before choice {unfinished[0]} finished")
        self.usage_seen = True

    def _check_choice(self, choice: Any) -> int:
        if not isinstance(choice, dict):
            raise self.fail("a choice is not an object")
        index = choice.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise self.fail(f"choice index {index!r} is not a non-negative integer")
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            raise self.fail(f"choice {index} has no delta object")
        if index in self._finished:
            raise self.fail(f"choice {index} has a delta after its finish_reason")
        if index not in self._seen:
            if delta.get("role") != "assistant":
                raise self.fail(f"choice {index}'s first delta has no role 'assistant'")
            self._seen.add(index)
        elif "role" in delta and delta["role"] is not None:
            raise self.fail(f"choice {index} repeats the role")
        for key in ("content", "reasoning_content"):
            if delta.get(key) is not None and not isinstance(delta[key], str):
                raise self.fail(f"choice {index}'s delta.{key} is not a string")
        if delta.get("tool_calls") is not None:
            self._check_tool_calls(index, delta["tool_calls"])
        reason = choice.get("finish_reason")
        if reason is not None:
            if reason not in _OPENAI_FINISH:
                raise self.fail(f"choice {index} has an unknown finish_reason {reason!r}")
            self._finished.add(index)
        return index

    def _check_tool_calls(self, choice: int, calls: Any) -> None:
        if not isinstance(calls, list) or not calls:
            raise self.fail(f"choice {choice}'s delta.tool_calls is not a non-empty array")
        for call in calls:
            if not isinstance(call, dict) or not isinstance(call.get("index"), int):
                raise self.fail(f"choice {choice} has a tool call fragment without an index")
            key = (choice, call["index"])
            function = call.get("function") or {}
            if not isinstance(function, dict):
                raise self.fail(f"tool call {key[1]} of choice {choice}: function is not an object")
            fields = {"id": call.get("id"), "type": call.get("type"), "name": function.get("name")}
            if key not in self._calls:
                if not isinstance(fields["id"], str) or not fields["id"]:
                    raise self.fail(f"tool call {key[1]} of choice {choice} starts without an id")
                if fields["type"] != "function":
                    raise self.fail(
                        f"tool call {key[1]} of choice {choice} starts without type 'function'"
                    )
                if not isinstance(fields["name"], str) or not fields["name"]:
                    raise self.fail(
                        f"tool call {key[1]} of choice {choice} starts without function.name"
                    )
                self._calls.add(key)
            else:
                for name, value in fields.items():
                    if value is not None:
                        raise self.fail(
                            f"tool call {key[1]} of choice {choice} repeats {name!r} after its "
                            "first fragment"
                        )
            arguments = function.get("arguments")
            if arguments is not None and not isinstance(arguments, str):
                raise self.fail(f"tool call {key[1]} of choice {choice}: arguments is not a string")

    def end(self) -> None:
        """Check the stream's end."""
        self.position += 1
        if not self.done:
            raise self.fail("the stream ended without data: [DONE]")
        if self.errored:
            return
        if not self._seen:
            raise self.fail("the stream had no choices")
        unfinished = sorted(self._seen - self._finished)
        if unfinished:
            raise self.fail(f"choice {unfinished[0]} never got a finish_reason")


class AnthropicGrammar(_Grammar):
    """Incremental validator of an Anthropic Messages stream (rules in the module doc)."""

    def __init__(self, *, require_ids: bool = False) -> None:
        super().__init__(require_ids)
        self.started = False
        self.stopped = False
        self.errored = False
        self._delta_seen = False
        self._next_index = 0
        self._open: tuple[int, str] | None = None  # (index, block type)
        self._json_pieces: list[str] = []
        # A tool_use block whose input JSON is incomplete: only max_tokens may explain it.
        self._cut_json_block: int | None = None

    def feed(self, event: EventLike) -> None:
        """Check the next event."""
        self.position += 1
        if self.stopped or self.errored:
            raise self.fail(f"{event.event!r} after {'error' if self.errored else 'message_stop'}")
        self._check_id(event)
        value = self._object(event)
        kind = value.get("type")
        if kind != event.event:
            raise self.fail(f"event type {event.event!r} but data type {kind!r}")
        if kind == "ping":
            return
        if kind == "error":
            error = value.get("error")
            if not isinstance(error, dict) or not isinstance(error.get("type"), str):
                raise self.fail("the error event's error has no type")
            if not isinstance(error.get("message"), str):
                raise self.fail("the error event's error has no message")
            self.errored = True
            return
        if kind == "message_start":
            self._message_start(value)
            return
        if not self.started:
            raise self.fail(f"{kind!r} before message_start")
        if kind == "content_block_start":
            self._block_start(value)
        elif kind == "content_block_delta":
            self._block_delta(value)
        elif kind == "content_block_stop":
            self._block_stop(value)
        elif kind == "message_delta":
            self._message_delta(value)
        elif kind == "message_stop":
            if not self._delta_seen:
                raise self.fail("message_stop before message_delta")
            self.stopped = True
        else:
            raise self.fail(f"unknown event type {kind!r}")

    def _message_start(self, value: dict[str, Any]) -> None:
        if self.started:
            raise self.fail("a second message_start")
        message = value.get("message")
        if not isinstance(message, dict):
            raise self.fail("message_start has no message object")
        expected: dict[str, Any] = {
            "type": "message",
            "role": "assistant",
            "content": [],
            "stop_reason": None,
        }
        for key, want in expected.items():
            if message.get(key) != want:
                raise self.fail(
                    f"message_start's message.{key} is {message.get(key)!r}, not {want!r}"
                )
        if not isinstance(message.get("id"), str) or not isinstance(message.get("model"), str):
            raise self.fail("message_start's message needs a string id and model")
        usage = message.get("usage")
        if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
            raise self.fail("message_start's message has no usage.input_tokens")
        self.started = True

    def _index(self, value: dict[str, Any]) -> int:
        index = value.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise self.fail(f"{value.get('type')} has no integer index")
        return index

    def _block_start(self, value: dict[str, Any]) -> None:
        index = self._index(value)
        if self._open is not None:
            raise self.fail(f"content_block_start {index} while block {self._open[0]} is open")
        if self._delta_seen:
            raise self.fail("content_block_start after message_delta")
        if index != self._next_index:
            raise self.fail(f"content_block_start index {index}, expected {self._next_index}")
        block = value.get("content_block")
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise self.fail(f"content_block_start {index} has no content_block type")
        if block["type"] == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise self.fail(f"tool_use block {index} needs a string id and name")
            if block.get("input") != {}:
                raise self.fail(f"tool_use block {index} must start with input {{}}")
        self._open = (index, block["type"])
        self._next_index += 1
        self._json_pieces = []

    def _block_delta(self, value: dict[str, Any]) -> None:
        index = self._index(value)
        if self._open is None or self._open[0] != index:
            raise self.fail(f"content_block_delta for block {index}, which is not open")
        delta = value.get("delta")
        if not isinstance(delta, dict):
            raise self.fail(f"content_block_delta for block {index} has no delta object")
        kind = delta.get("type")
        if kind not in _BLOCK_DELTAS.get(self._open[1], ()):
            raise self.fail(f"{kind!r} delta in a {self._open[1]!r} block")
        if kind == "input_json_delta":
            if not isinstance(delta.get("partial_json"), str):
                raise self.fail(f"input_json_delta for block {index} has no partial_json string")
            self._json_pieces.append(delta["partial_json"])

    def _block_stop(self, value: dict[str, Any]) -> None:
        index = self._index(value)
        if self._open is None or self._open[0] != index:
            raise self.fail(f"content_block_stop for block {index}, which is not open")
        if self._open[1] == "tool_use" and (joined := "".join(self._json_pieces)):
            try:
                parsed = loads(joined)
            except JSONDecodeError:
                # Legal only if max_tokens cut the call short: decided at message_delta.
                self._cut_json_block = index
            else:
                if not isinstance(parsed, dict):
                    raise self.fail(f"tool_use block {index}'s input is not a JSON object")
        self._open = None

    def _message_delta(self, value: dict[str, Any]) -> None:
        if self._open is not None:
            raise self.fail(f"message_delta while block {self._open[0]} is open")
        if self._delta_seen:
            raise self.fail("a second message_delta")
        delta = value.get("delta")
        if not isinstance(delta, dict) or delta.get("stop_reason") not in _ANTHROPIC_STOP:
            raise self.fail(f"message_delta has no valid stop_reason: {delta!r}")
        if self._cut_json_block is not None and delta.get("stop_reason") != "max_tokens":
            raise self.fail(
                f"tool_use block {self._cut_json_block}'s partial_json is not JSON "
                f"(and the message was not cut by max_tokens)"
            )
        usage = value.get("usage")
        if not isinstance(usage, dict) or not isinstance(usage.get("output_tokens"), int):
            raise self.fail("message_delta has no usage.output_tokens")
        self._delta_seen = True

    def end(self) -> None:
        """Check the stream's end."""
        self.position += 1
        if not (self.stopped or self.errored):
            raise self.fail("the stream ended without message_stop")


def check_openai_stream(events: Iterable[EventLike], *, require_ids: bool = False) -> None:
    """Raise ``GrammarError`` unless ``events`` are a complete, valid OpenAI stream."""
    grammar = OpenAIGrammar(require_ids=require_ids)
    for event in events:
        grammar.feed(event)
    grammar.end()


def check_anthropic_stream(events: Iterable[EventLike], *, require_ids: bool = False) -> None:
    """Raise ``GrammarError`` unless ``events`` are a complete, valid Anthropic stream."""
    grammar = AnthropicGrammar(require_ids=require_ids)
    for event in events:
        grammar.feed(event)
    grammar.end()
