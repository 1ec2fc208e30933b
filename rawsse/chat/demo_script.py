"""What the demo models answer, step by step: their pure part, without pacing or I/O.

Contract: ``parse_model_options(request, token_delay_s)`` validates the request's ``rawsse``
object into ``ModelOptions`` (the options and what they do are documented once, in
docs/demo-models.md). ``DemoAnswer(request, options, words)`` is one answer to ``request``,
whose words are ``echo``'s (``words`` the text: ``echo_words``) or ``lorem``'s (``words`` a
count: ``lorem_words``):

1. ``next_step()`` returns the next step's deltas, one per choice (choice 0's text as a plain
   ``str``, the cheapest delta), or None once they ran out; ``steps()`` iterates them. Each
   step is made when asked for, from a position: an answer holds the same few fields, and
   costs the same to start, whatever its ``max_tokens`` and ``n``. The pieces are the
   reasoning tokens (``answer: reasoning``), then the words; or the tool call's name, then
   its arguments in fragments (``answer: tool_call``).
2. ``max_tokens`` cuts the pieces (every piece is a token); a cut answer's ``reason`` becomes
   ``length``, else it is ``stop`` (``tool_calls`` for a tool call).
3. With ``fail_after``, ``next_step()`` raises the injected ``ChatError`` instead of that
   step, or after the last step when the answer is shorter.
4. ``finish()``: the ``Finish`` of every choice, once the steps ran out.

``echo_words(text)`` and ``lorem_words(count)`` are the two models' words as iterators.
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
_LOREM_FIRST = _LOREM[0].capitalize()
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
    return itertools.chain((_LOREM_FIRST,), rest)


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
    """One demo answer to a request, a step at a time (see the module docstring).

    A few fields and a position, not a pipeline of iterators: a held stream keeps its answer
    for its whole life (an iterator chain, its generators and the parsed request cost several
    times this). It keeps nothing of the request but what it answers with: its ``n``,
    ``max_tokens``, and for ``echo`` the last user text.
    """

    __slots__ = (
        "fail_after",
        "fail_status",
        "limit",
        "mode",
        "n",
        "pos",
        "reason",
        "step",
        "tool",
        "words",
    )

    def __init__(self, request: ChatRequest, options: ModelOptions, words: str | int) -> None:
        """``words``: the text whose word tokens ``echo`` answers with (``echo_words``), or
        how many filler words ``lorem`` has (``lorem_words``)."""
        self.n = request.n
        self.limit = request.max_tokens
        self.fail_after = options.fail_after
        self.fail_status = options.fail_status
        self.mode = options.answer
        self.words = words
        self.pos = 0  # where echo's next word starts in its text
        self.step = 0  # the steps produced so far
        # A tool-call answer's (name, arguments): made once, the fragments are cut from them.
        self.tool: tuple[str, str] | None = None
        if self.mode == "tool_call":
            arguments = dumps({"query": request.last_user_text()}).decode()
            self.tool = (_tool_name(request), arguments)
        self.reason: FinishReason = "tool_calls" if self.mode == "tool_call" else "stop"

    @property
    def failure(self) -> ChatError:
        """The injected failure (``fail_after``), made when raised: a held stream keeps none."""
        return ChatError(
            self.fail_status,
            f"Injected failure after {self.fail_after} tokens (rawsse.fail_after).",
            code="injected_failure",
        )

    def next_step(self) -> tuple[str | Delta, ...] | None:
        """The next step's deltas, one per choice; None once the steps ran out (``finish``
        follows). Raises the injected failure at its step, or after the last one when the
        answer is shorter."""
        step = self.step
        limit, fail_after = self.limit, self.fail_after
        if (limit is None or step < limit) and (fail_after is None or step < fail_after):
            row = self._row(step)
            if row is not None:
                self.step = step + 1
                if type(row[0]) is str and isinstance(self.words, str):
                    self.pos += len(row[0])  # echo reads on past this word
                return row
        elif fail_after is None and self._row(step) is not None:
            self.reason = "length"  # a piece beyond max_tokens: the answer was cut
        if fail_after is not None:
            raise self.failure
        return None

    def steps(self) -> Iterator[tuple[str | Delta, ...]]:
        """Each step's deltas, one per choice (``next_step`` until None)."""
        while (row := self.next_step()) is not None:
            yield row

    def finish(self) -> list[Finish]:
        """Every choice's ``Finish``, after the last step."""
        return [Finish(self.reason, choice) for choice in range(self.n)]

    def _row(self, step: int) -> tuple[str | Delta, ...] | None:
        """Step ``step``'s deltas (the next step: echo's words are read in order), uncut."""
        choices = range(self.n)
        if self.tool is not None:
            name, arguments = self.tool
            if step == 0:
                return tuple(ToolCallDelta(0, name=name, choice=c) for c in choices)
            start = (step - 1) * _TOOL_ARGUMENT_PIECE_CHARS
            if start >= len(arguments):
                return None
            piece = arguments[start : start + _TOOL_ARGUMENT_PIECE_CHARS]
            return tuple(ToolCallDelta(0, arguments=piece, choice=c) for c in choices)
        if self.mode == "reasoning":
            if step < len(_REASONING_TOKENS):
                token = _REASONING_TOKENS[step]
                return tuple(ReasoningDelta(token, c) for c in choices)
            step -= len(_REASONING_TOKENS)
        word = self._word(step)
        if word is None:
            return None
        if self.n == 1:
            return (word,)  # a plain str, the cheapest delta
        return (word, *(TextDelta(word, c) for c in choices[1:]))

    def _word(self, index: int) -> str | None:
        """Word ``index`` of the answer (echo's must be asked in order), or None past the end."""
        words = self.words
        if isinstance(words, int):
            if index >= words:
                return None
            return _LOREM_FIRST if index == 0 else _LOREM_SPACED[index % len(_LOREM_SPACED)]
        if self.pos >= len(words):
            return None
        match = _TOKEN.match(words, self.pos)
        assert match is not None  # the pattern matches at every position of a non-empty rest
        return match.group()


# The reasoning answer's tokens, as ``echo_words`` cuts them.
_REASONING_TOKENS = tuple(echo_words(_REASONING))


def _tool_name(request: ChatRequest) -> str:
    if request.tool_choice is not None and request.tool_choice.name is not None:
        return request.tool_choice.name
    return request.tools[0].name if request.tools else "lookup"
