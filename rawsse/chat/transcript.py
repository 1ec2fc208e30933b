"""What a model has said so far in one generation: the neutral deltas, checked and accumulated.

Contract: a ``Transcript`` is fed every delta of one generation, in order, and keeps, per
choice, the content blocks (runs of text, runs of reasoning, tool calls) in the order they
began, each tool call's id, name and arguments, and the finish reason; plus the citations and
the usage. It enforces the backend's side of the delta contract and raises ``ChatError`` 500
(the server's fault) when a backend breaks it:

1. ``choice`` is below the request's ``n``;
2. nothing is yielded for a choice after its ``Finish``;
3. a tool call's first fragment carries its ``name``; later ones may not rename it.

Usage: the completion tokens are the pieces yielded (text, reasoning and tool-call fragments,
over all choices); the prompt tokens are ``ChatRequest.prompt_tokens()``; a ``Usage`` delta
replaces both. Every dialect stream keeps one, and builds its non-streaming body from it.

Memory: with ``keep_text`` false (a streaming request, whose frames already carried the text),
text and reasoning pieces are counted but not kept, so a long stream costs no more memory than
a short one; tool-call arguments are always kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from rawsse.chat.deltas import FinishReason, Usage
from rawsse.chat.errors import ChatError
from rawsse.chat.request import ChatRequest
from rawsse.jsonio import JSONDecodeError, loads

__all__ = ["Block", "ChoiceState", "ToolCallState", "Transcript"]


@dataclass(slots=True)
class ToolCallState:
    """One tool call as received so far: ``arguments`` grows with each fragment."""

    index: int
    id: str
    name: str
    arguments: str = ""

    def arguments_object(self, cut: bool = False) -> dict[str, Any]:
        """The arguments parsed, as the JSON object Anthropic's ``input`` and Gemini's ``args``
        must be (``{}`` when there are none); ``ChatError`` 500 when they are not one.

        ``cut``: the answer was cut at ``max_tokens`` (finish reason ``length``), so arguments
        that end mid-JSON are expected, not the model's fault: they give ``{}`` (what the
        vendors' object fields can carry of a call that never finished).
        """
        if not self.arguments:
            return {}
        try:
            value = loads(self.arguments)
        except JSONDecodeError as exc:
            if cut:
                return {}
            raise _protocol_error(f"the arguments of tool call {self.index} are not JSON.") from exc
        if not isinstance(value, dict):
            raise _protocol_error(f"the arguments of tool call {self.index} are not a JSON object.")
        return value


@dataclass(slots=True)
class Block:
    """A run of one kind of content: text pieces, reasoning pieces, or one tool call."""

    kind: Literal["text", "reasoning", "tool"]
    pieces: list[str] = field(default_factory=list)
    tool: ToolCallState | None = None

    @property
    def text(self) -> str:
        """The run's text (the pieces joined)."""
        return "".join(self.pieces)


_NO_CALLS: Mapping[int, ToolCallState] = MappingProxyType({})


@dataclass(slots=True)
class ChoiceState:
    """Everything choice ``index`` has produced so far."""

    index: int
    # Made with the first block (a list then): no empty list per choice before it.
    blocks: Sequence[Block] = ()
    # Shared and empty until the first call: a dict then (most choices call no tool).
    tool_calls: Mapping[int, ToolCallState] = field(default_factory=lambda: _NO_CALLS)
    finish_reason: FinishReason | None = None
    pieces: int = 0

    @property
    def text(self) -> str:
        """All answer text, concatenated."""
        return "".join(block.text for block in self.blocks if block.kind == "text")

    @property
    def reasoning(self) -> str:
        """All reasoning text, concatenated."""
        return "".join(block.text for block in self.blocks if block.kind == "reasoning")

    def final_reason(self) -> FinishReason:
        """The finish reason, defaulting to ``tool_calls`` (if it called tools) or ``stop``."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


# The text and reasoning runs of every transcript that keeps no text: never appended to.
_RUNS: dict[str, Block] = {"text": Block("text"), "reasoning": Block("reasoning")}


def _add_block(state: ChoiceState, block: Block) -> None:
    blocks = state.blocks
    if isinstance(blocks, list):
        blocks.append(block)
    else:
        state.blocks = [block]


def _protocol_error(message: str) -> ChatError:
    return ChatError.server_error(f"The model backend broke the delta protocol: {message}")


class Transcript:
    """The accumulated generation; see the module docstring for the rules it enforces.

    ``keep_text`` false drops text and reasoning pieces once counted: its runs of text and of
    reasoning are then blocks shared by every transcript (they have no pieces to keep). It
    holds no reference to its dialect stream (the id maker comes with each tool fragment), so
    the two never form a reference cycle: a stream's state is freed when it ends, not at the
    collector's next pass. Nor to the request: what it needs is read at the start.
    """

    __slots__ = (
        "_estimate",
        "_usage",
        "choices",
        "citations",
        "keep_text",
    )

    def __init__(self, request: ChatRequest, *, keep_text: bool = True) -> None:
        self.keep_text = keep_text
        self.choices = tuple(ChoiceState(i) for i in range(request.n))
        self.citations: tuple[str, ...] = ()
        self._usage: Usage | None = None
        self._estimate = request.prompt_tokens()

    def choice(self, index: int) -> ChoiceState:
        """The state of choice ``index``, which must exist and not be finished."""
        if index >= len(self.choices):
            raise _protocol_error(
                f"it yielded a delta for choice {index}, but the request has n={len(self.choices)}."
            )
        state = self.choices[index]
        if state.finish_reason is not None:
            raise _protocol_error(f"it yielded a delta for choice {index} after its Finish.")
        return state

    def add_text(self, state: ChoiceState, kind: Literal["text", "reasoning"], text: str) -> bool:
        """Record a text or reasoning piece; true when it begins a new block."""
        state.pieces += 1
        blocks = state.blocks
        if blocks and blocks[-1].kind == kind:
            if self.keep_text:
                blocks[-1].pieces.append(text)
            return False
        _add_block(state, Block(kind, [text]) if self.keep_text else _RUNS[kind])
        return True

    def add_tool_fragment(
        self,
        state: ChoiceState,
        index: int,
        id: str | None,
        name: str | None,
        arguments: str,
        make_tool_id: Callable[[int, int], str],
    ) -> tuple[ToolCallState, bool]:
        """Record a tool-call fragment; returns the call and whether this fragment began it.

        ``make_tool_id(choice, index)`` invents an id, in the dialect's style, for a call whose
        first fragment carried none.
        """
        state.pieces += 1
        call = state.tool_calls.get(index)
        if call is None:
            if name is None:
                raise _protocol_error(
                    f"the first fragment of tool call {index} (choice {state.index}) has no name."
                )
            call = ToolCallState(index, id or make_tool_id(state.index, index), name, arguments)
            calls = state.tool_calls
            if not isinstance(calls, dict):
                calls = state.tool_calls = {}
            calls[index] = call
            _add_block(state, Block("tool", tool=call))
            return call, True
        if name is not None and name != call.name:
            raise _protocol_error(f"tool call {index} was renamed from {call.name!r} to {name!r}.")
        call.arguments += arguments
        return call, False

    def set_finish(self, state: ChoiceState, reason: FinishReason) -> None:
        """Record that ``state``'s choice finished for ``reason``."""
        state.finish_reason = reason

    def set_usage(self, usage: Usage) -> None:
        """Replace rawsse's token counts with the backend's."""
        self._usage = usage

    @property
    def prompt_tokens(self) -> int:
        """The prompt token count: the backend's, else rawsse's word-count estimate."""
        return self._usage.prompt_tokens if self._usage else self._estimate

    @property
    def completion_tokens(self) -> int:
        """The completion token count: the backend's, else the pieces it yielded."""
        if self._usage:
            return self._usage.completion_tokens
        return sum(state.pieces for state in self.choices)
