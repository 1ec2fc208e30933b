"""The neutral delta stream a model backend yields, whatever wire format the client speaks.

Contract: a model backend is an async generator function taking a validated ``ChatRequest`` and
yielding pieces of one generation, in order:

- ``str`` or ``TextDelta``: a piece of answer text (a plain ``str`` is ``TextDelta(str)``, the
  cheapest thing to yield);
- ``ReasoningDelta``: a piece of reasoning ("thinking") text;
- ``ToolCallDelta``: a fragment of tool call ``index``; the call's first fragment names the tool
  (and may carry its id), later fragments carry only more ``arguments`` text (JSON, in pieces);
- ``Citations``: source URLs for the answer (Perplexity style);
- ``Finish``: why choice ``choice`` ended (``stop``, ``length`` or ``tool_calls``);
- ``Usage``: the token counts, when the backend knows them better than rawsse's estimate.

``choice`` selects one of the request's ``n`` choices (0 when ``n`` is 1). The values validate
their fields on construction and raise ``ValueError`` naming the field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from rawsse.chat.request import ChatRequest

__all__ = [
    "Citations",
    "Delta",
    "Finish",
    "FinishReason",
    "ModelBackend",
    "ReasoningDelta",
    "TextDelta",
    "ToolCallDelta",
    "Usage",
]

FinishReason: TypeAlias = Literal["stop", "length", "tool_calls"]
_FINISH_REASONS = ("stop", "length", "tool_calls")


def _check_choice(choice: int) -> None:
    if not isinstance(choice, int) or isinstance(choice, bool) or choice < 0:
        raise ValueError(f"choice must be a non-negative integer: {choice!r}")


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer: {value!r}")


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of answer text for choice ``choice``."""

    text: str
    choice: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ValueError(f"text must be a str: {self.text!r}")
        _check_choice(self.choice)


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of reasoning text for choice ``choice`` (OpenAI-compatible
    ``reasoning_content``, Anthropic ``thinking``, Gemini ``thought`` parts)."""

    text: str
    choice: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ValueError(f"text must be a str: {self.text!r}")
        _check_choice(self.choice)


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of tool call ``index`` (0, 1, ... within a choice).

    The first fragment of a call must carry ``name``; ``id`` is optional there (the dialect makes
    one up in its vendor's style when it is missing). Later fragments carry only ``arguments``.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    choice: int = 0

    def __post_init__(self) -> None:
        _check_count("index", self.index)
        if self.id is not None and not isinstance(self.id, str):
            raise ValueError(f"id must be a str or None: {self.id!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ValueError(f"name must be a non-empty str or None: {self.name!r}")
        if not isinstance(self.arguments, str):
            raise ValueError(f"arguments must be a str: {self.arguments!r}")
        _check_choice(self.choice)


@dataclass(frozen=True, slots=True)
class Citations:
    """The source URLs of the answer; the last ``Citations`` yielded wins."""

    urls: tuple[str, ...]

    def __post_init__(self) -> None:
        # Accept any iterable of str (a list is the natural thing to pass) but store a tuple.
        urls = tuple(self.urls)
        if not all(isinstance(url, str) for url in urls):
            raise ValueError(f"urls must be strings: {urls!r}")
        object.__setattr__(self, "urls", urls)


@dataclass(frozen=True, slots=True)
class Finish:
    """Choice ``choice`` is complete, for ``reason``; nothing more may be yielded for it."""

    reason: FinishReason
    choice: int = 0

    def __post_init__(self) -> None:
        if self.reason not in _FINISH_REASONS:
            raise ValueError(f"reason must be one of {_FINISH_REASONS}: {self.reason!r}")
        _check_choice(self.choice)


@dataclass(frozen=True, slots=True)
class Usage:
    """The generation's token counts, replacing rawsse's own (pieces yielded, words sent)."""

    prompt_tokens: int
    completion_tokens: int

    def __post_init__(self) -> None:
        _check_count("prompt_tokens", self.prompt_tokens)
        _check_count("completion_tokens", self.completion_tokens)


Delta: TypeAlias = TextDelta | ReasoningDelta | ToolCallDelta | Citations | Finish | Usage
"""Any one item of the neutral stream, other than a plain ``str``."""

ModelBackend: TypeAlias = Callable[[ChatRequest], AsyncIterator[str | Delta]]
"""A model: called with the validated request, returns the async iterator of its deltas.

Write it as an async generator function, or as a function that checks the request (raising
``ChatError`` at once) and returns an async generator. The mount closes the generator when the
client leaves, so code after a ``yield`` may be cancelled. Raise ``ChatError`` for an error with
a status (before the first delta it can still become the HTTP status); anything else is a 500.
A model that paces its tokens waits best with ``rawsse.sleep`` (or a ``rawsse.Ticker``): one
entry in the server's shared timer per wait, where ``anyio.sleep`` costs an event-loop timer
(and, on trio, a cancel scope) per token.
"""
