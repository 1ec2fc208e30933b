"""What the demo models answer, step by step: their pure part, without pacing or I/O.

Contract: ``parse_model_options(request, token_delay_s)`` validates the request's ``rawsse``
object into ``ModelOptions`` (the options and what they do are documented once, in
docs/demo-models.md). ``DemoAnswer(request, options, words)`` is one answer to ``request``:

1. ``steps()`` yields each step's deltas, one per choice (choice 0's text as a plain ``str``,
   the cheapest delta), lazily: an answer holds the same memory, and costs the same to start,
   whatever its ``max_tokens`` and ``n``. The pieces are the reasoning tokens (``answer:
   reasoning``), then ``words``; or the tool call's name, then its arguments in fragments
   (``answer: tool_call``).
2. ``max_tokens`` cuts the pieces (every piece is a token); a cut answer's ``reason`` becomes
   ``length``, else it is ``stop`` (``tool_calls`` for a tool call).
3. With ``fail_after``, ``steps()`` raises the injected ``ChatError`` instead of that step, or
   after the last step when the answer is shorter.
4. ``finish()``: the ``Finish`` of every choice, once the steps ran out.

``echo_words(text)`` and ``lorem_words(count)`` are the two models' words, lazy too.
``TokenGaps`` draws the pauses between steps; waiting them is ``rawsse.chat.demo``'s part.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from rawsse.chat.deltas import Delta, Finish, FinishReason, ReasoningDelta, TextDelta, ToolCallDelta
from rawsse.chat.errors import ChatError
from rawsse.chat.fields import as_enum, as_int, as_number
from rawsse.chat.request import ChatRequest
from rawsse.jsonio import dumps

__all__ = [
    "DEFAULT_LOREM_TOKENS",
    "MAX_DEMO_TOKENS",
    "DemoAnswer",
    "ModelOptions",
    "TokenGaps",
    "echo_words",
    "lorem_words",
    "parse_model_options",
]

DEFAULT_LOREM_TOKENS = 16
"""``lorem``'s answer length when the request sets no ``max_tokens``."""

MAX_DEMO_TOKENS = 100_000
"""The most tokens a demo model answers with: a larger ``max_tokens`` is a 400, as a real
model refuses one beyond its output limit (and one request cannot hog the process)."""

# Longest wait an option may ask for: enough for any load test, short of a stuck stream.
_MAX_DELAY_S = 60.0
_TOKEN = re.compile(r"\S+\s*|\s+")
_LOREM = (
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "ut",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "ut",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
)
# Every word after the first comes with the space before it.
_LOREM_SPACED = tuple(" " + word for word in _LOREM)
_REASONING = "Thinking about the answer before giving it."
_TOOL_ARGUMENT_PIECE_CHARS = 8
_OPTION_NAMES = (
    "ttft_s",
    "token_delay_s",
    "delay_dist",
    "seed",
    "answer",
    "fail_after",
    "fail_status",
)


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """The validated ``rawsse`` options of one request (see docs/demo-models.md)."""

    token_delay_s: float
    ttft_s: float = 0.0
    delay_dist: Literal["fixed", "uniform", "exponential"] = "fixed"
    seed: int | None = None
    answer: Literal["text", "reasoning", "tool_call"] = "text"
    fail_after: int | None = None
    fail_status: int = 500


def parse_model_options(request: ChatRequest, token_delay_s: float) -> ModelOptions:
    """Validate ``request.extra`` (the ``rawsse`` object); raises ``ChatError`` 400."""
    extra = request.extra
    for key in extra:
        if key not in _OPTION_NAMES:
            raise ChatError.invalid(
                f"Unknown option 'rawsse.{key}'. Known options: {', '.join(_OPTION_NAMES)}.",
                param=f"rawsse.{key}",
                code="unknown_parameter",
            )

    def get(key: str, check: Callable[[Any, str], Any], default: Any) -> Any:
        value = extra.get(key)
        return default if value is None else check(value, f"rawsse.{key}")

    def delay(value: Any, param: str) -> float:
        return as_number(value, param, minimum=0, maximum=_MAX_DELAY_S)

    def choice(*choices: str) -> Callable[[Any, str], str]:
        return lambda value, param: as_enum(value, param, choices)

    return ModelOptions(
        token_delay_s=get("token_delay_s", delay, token_delay_s),
        ttft_s=get("ttft_s", delay, 0.0),
        delay_dist=get("delay_dist", choice("fixed", "uniform", "exponential"), "fixed"),
        seed=get("seed", as_int, request.seed),
        answer=get("answer", choice("text", "reasoning", "tool_call"), "text"),
        fail_after=get("fail_after", lambda v, p: as_int(v, p, minimum=0), None),
        fail_status=get("fail_status", lambda v, p: as_int(v, p, minimum=400, maximum=599), 500),
    )


def echo_words(text: str) -> Iterator[str]:
    """``text`` as word tokens that concatenate back to exactly the text: each word keeps the
    whitespace after it, leading whitespace is a token of its own."""
    return map(re.Match.group, _TOKEN.finditer(text))


def lorem_words(count: int) -> Iterator[str]:
    """``count`` words of filler: "Lorem ipsum dolor ...", repeating."""
    if count <= 0:
        return iter(())
    rest = itertools.islice(itertools.cycle(_LOREM_SPACED), 1, count)
    return itertools.chain((_LOREM[0].capitalize(),), rest)


class TokenGaps:
    """The pauses between tokens, drawn from ``options``' distribution with its seed."""

    __slots__ = ("dist", "mean_s", "random")

    def __init__(self, options: ModelOptions) -> None:
        self.mean_s = options.token_delay_s
        self.dist = options.delay_dist
        # Only a random distribution needs a generator: its state is ~2.8 KiB, which every
        # held stream with fixed gaps would otherwise carry for nothing.
        self.random = None if self.dist == "fixed" else random.Random(options.seed)

    def next_s(self) -> float:
        """The next pause, in seconds."""
        if self.mean_s <= 0 or self.random is None:
            return self.mean_s
        if self.dist == "uniform":
            return self.random.uniform(0, 2 * self.mean_s)
        return self.random.expovariate(1 / self.mean_s)


class DemoAnswer:
    """One demo answer to a request, step by step (see the module docstring)."""

    __slots__ = ("options", "reason", "request", "words")

    def __init__(self, request: ChatRequest, options: ModelOptions, words: Iterator[str]) -> None:
        self.request = request
        self.options = options
        self.words = words
        self.reason: FinishReason = "tool_calls" if options.answer == "tool_call" else "stop"

    @property
    def failure(self) -> ChatError:
        """The injected failure (``fail_after``), made when raised: a held stream keeps none."""
        options = self.options
        return ChatError(
            options.fail_status,
            f"Injected failure after {options.fail_after} tokens (rawsse.fail_after).",
            code="injected_failure",
        )

    def steps(self) -> Iterator[tuple[str | Delta, ...]]:
        """Each step's deltas, one per choice; raises the injected failure at its step."""
        rows = self._rows()
        limit = self.request.max_tokens
        fail_after = self.options.fail_after
        ends = [end for end in (limit, fail_after) if end is not None]
        # The hot path: C iterators all the way down (islice, zip, cycle), no Python loop.
        yield from itertools.islice(rows, min(ends, default=None))
        if fail_after is not None:
            raise self.failure  # at its step, or after the last one when the answer is shorter
        if limit is not None and next(rows, None) is not None:
            self.reason = "length"  # a piece beyond max_tokens: the answer was cut

    def finish(self) -> list[Finish]:
        """Every choice's ``Finish``, after the last step."""
        return [Finish(self.reason, choice) for choice in range(self.request.n)]

    def _rows(self) -> Iterator[tuple[str | Delta, ...]]:
        """Every step's deltas, uncut."""
        request = self.request
        choices = range(request.n)
        if self.options.answer == "tool_call":
            arguments = dumps({"query": request.last_user_text()}).decode()
            step = _TOOL_ARGUMENT_PIECE_CHARS
            fragments = (arguments[i : i + step] for i in range(0, len(arguments), step))
            name = _tool_name(request)
            return itertools.chain(
                [tuple(ToolCallDelta(0, name=name, choice=c) for c in choices)],
                (
                    tuple(ToolCallDelta(0, arguments=a, choice=c) for c in choices)
                    for a in fragments
                ),
            )
        reasoning: Iterator[tuple[str | Delta, ...]] = iter(())
        if self.options.answer == "reasoning":
            reasoning = (
                tuple(ReasoningDelta(token, c) for c in choices) for token in echo_words(_REASONING)
            )
        text: Iterator[tuple[str | Delta, ...]]
        if request.n == 1:
            text = zip(self.words)  # one-tuples of plain str, the cheapest delta
        else:
            text = ((word, *(TextDelta(word, c) for c in choices[1:])) for word in self.words)
        return itertools.chain(reasoning, text)


def _tool_name(request: ChatRequest) -> str:
    if request.tool_choice is not None and request.tool_choice.name is not None:
        return request.tool_choice.name
    return request.tools[0].name if request.tools else "lookup"
