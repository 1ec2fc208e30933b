"""The demo models, ``echo`` and ``lorem``: model backends for trying and load-testing rawsse.

Contract: ``demo_models(token_delay_s)`` returns ``{"echo": ..., "lorem": ...}``, two
``ModelBackend``s that generate without any model, paced like one:

- ``echo`` answers with the text of the last user message, verbatim, one token per word
  (each word keeps the whitespace after it; leading whitespace is a token of its own), so
  the tokens concatenate to exactly the message.
- ``lorem`` answers with exactly ``max_tokens`` tokens of filler text ("Lorem ipsum dolor
  ..."), or 16 when the request sets no ``max_tokens``.

Each validates its options when called (so a bad option fails before any frame) and returns
the async generator of its deltas. Both answer every one of the request's ``n`` choices with the
same tokens, interleaved step by step. Both honour ``max_tokens``: an answer cut by it ends
with finish reason ``length`` (lorem's filler never ends by itself, so a lorem answer with
``max_tokens`` always ends that way), any other with ``stop`` (``tool_calls`` for a tool-call
answer). The first token comes at once, each later one ``token_delay_s`` after the one
before. Every yielded piece (token, reasoning token, tool-call fragment) is one completion
token.

Load-test options, per request, in a ``rawsse`` object in the request body (OpenAI SDK users
pass ``extra_body={"rawsse": {...}}``; any dialect accepts it). Invalid options are a 400,
raised before the first token:

=================  ====================================================================
``ttft_s``         seconds to wait before the first token (0 to 60; default 0)
``token_delay_s``  mean seconds between tokens (0 to 60; default: the server's pace)
``delay_dist``     ``fixed`` (default), ``uniform`` (0 to twice the mean) or
                   ``exponential`` (with that mean): the distribution of the gaps
``seed``           integer seed of the gap distribution (default: the request's ``seed``,
                   else a fresh one per request)
``answer``         ``text`` (default); ``reasoning`` (7 reasoning tokens, then the text);
                   ``tool_call`` (one call, in fragments, to the tool the request forces
                   or its first tool, else ``lookup``, with arguments
                   ``{"query": <last user text>}``; finish reason ``tool_calls``)
``fail_after``     after this many tokens (per choice), fail with a ``ChatError``: the
                   dialect's in-band error frame mid-stream, or, at 0 and while the
                   status is not committed yet, a real HTTP error status
``fail_status``    the status of that failure (400 to 599; default 500)
=================  ====================================================================

For example ``{"model": "lorem", "max_tokens": 500, "stream": true, "messages": [...],
"rawsse": {"ttft_s": 0.3, "token_delay_s": 0.01, "delay_dist": "exponential", "seed": 7}}``.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio.lowlevel

from rawsse._runtime.ticker import sleep
from rawsse.chat.deltas import (
    Delta,
    Finish,
    FinishReason,
    ModelBackend,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
)
from rawsse.chat.errors import ChatError
from rawsse.chat.fields import as_enum, as_int, as_number
from rawsse.chat.request import ChatRequest
from rawsse.jsonio import dumps

__all__ = [
    "DEFAULT_LOREM_TOKENS",
    "MAX_DEMO_TOKENS",
    "ModelOptions",
    "TokenGaps",
    "demo_models",
    "parse_model_options",
]

DEFAULT_LOREM_TOKENS = 16
"""``lorem``'s answer length when the request sets no ``max_tokens``."""

MAX_DEMO_TOKENS = 100_000
"""The most tokens a demo model answers with: a larger ``max_tokens`` is a 400, as a real
model refuses one beyond its output limit (and one request cannot hog the process)."""

# Without a pause between tokens, the model still yields to the event loop this often.
_CHECKPOINT_EVERY = 256

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
    """The validated ``rawsse`` options of one request (see the module docstring)."""

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


def _tokens(text: str) -> list[str]:
    """Split text into word tokens that concatenate back to exactly the text."""
    return _TOKEN.findall(text)


def _lorem(count: int) -> list[str]:
    words = [_LOREM[i % len(_LOREM)] for i in range(count)]
    if words:
        words[0] = words[0].capitalize()
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def _tool_name(request: ChatRequest) -> str:
    if request.tool_choice is not None and request.tool_choice.name is not None:
        return request.tool_choice.name
    return request.tools[0].name if request.tools else "lookup"


def _pieces(
    request: ChatRequest, options: ModelOptions, text: list[str], choice: int
) -> list[str | Delta]:
    """The deltas of one choice's answer, before any cut by ``max_tokens``."""
    if options.answer == "tool_call":
        arguments = dumps({"query": request.last_user_text()}).decode()
        step = _TOOL_ARGUMENT_PIECE_CHARS
        fragments: list[str | Delta] = [ToolCallDelta(0, name=_tool_name(request), choice=choice)]
        fragments += [
            ToolCallDelta(0, arguments=arguments[i : i + step], choice=choice)
            for i in range(0, len(arguments), step)
        ]
        return fragments
    pieces: list[str | Delta] = []
    if options.answer == "reasoning":
        pieces += [ReasoningDelta(token, choice) for token in _tokens(_REASONING)]
    # Plain str is the cheapest delta; other choices need the choice number.
    pieces += text if choice == 0 else [TextDelta(token, choice) for token in text]
    return pieces


class TokenGaps:
    """The pauses between tokens, drawn from ``options``' distribution with its seed."""

    def __init__(self, options: ModelOptions) -> None:
        self.mean_s = options.token_delay_s
        self.dist = options.delay_dist
        self.random = random.Random(options.seed)

    def next_s(self) -> float:
        """The next pause, in seconds."""
        if self.mean_s <= 0 or self.dist == "fixed":
            return self.mean_s
        if self.dist == "uniform":
            return self.random.uniform(0, 2 * self.mean_s)
        return self.random.expovariate(1 / self.mean_s)


async def _generate(
    request: ChatRequest, options: ModelOptions, text: list[str]
) -> AsyncIterator[str | Delta]:
    """Yield every choice's pieces, step by step, paced, cut at ``max_tokens``."""
    plans = [_pieces(request, options, text, choice) for choice in range(request.n)]
    natural: FinishReason = "tool_calls" if options.answer == "tool_call" else "stop"
    reason = natural
    limit = request.max_tokens
    if limit is not None and len(plans[0]) > limit:
        plans = [plan[:limit] for plan in plans]
        reason = "length"
    failure = ChatError(
        options.fail_status,
        f"Injected failure after {options.fail_after} tokens (rawsse.fail_after).",
        code="injected_failure",
    )
    gaps = TokenGaps(options)
    # The waits are on the server's shared timer (rawsse.sleep): one heap entry per token.
    if options.ttft_s > 0:
        await sleep(options.ttft_s)
    for step in range(len(plans[0])):
        if step == options.fail_after:
            raise failure
        if step:
            gap_s = gaps.next_s()
            if gap_s > 0:
                await sleep(gap_s)
            elif step % _CHECKPOINT_EVERY == 0:
                await anyio.lowlevel.checkpoint()  # unpaced: let other clients in now and then
        for plan in plans:
            yield plan[step]
    if options.fail_after is not None:
        raise failure  # fewer tokens than fail_after: fail at the end
    for choice in range(request.n):
        yield Finish(reason, choice)


def demo_models(token_delay_s: float = 0.02) -> dict[str, ModelBackend]:
    """The demo models ``echo`` and ``lorem``, paced ``token_delay_s`` apart by default."""
    if token_delay_s < 0:
        raise ValueError(f"token_delay_s must be >= 0: {token_delay_s!r}")

    def echo(request: ChatRequest) -> AsyncIterator[str | Delta]:
        """Answer with the last user message's text, verbatim, a word per token."""
        options = parse_model_options(request, token_delay_s)
        return _generate(request, options, _tokens(request.last_user_text()))

    def lorem(request: ChatRequest) -> AsyncIterator[str | Delta]:
        """Answer with exactly max_tokens (default 16) tokens of filler text."""
        options = parse_model_options(request, token_delay_s)
        if request.max_tokens is not None and request.max_tokens > MAX_DEMO_TOKENS:
            raise ChatError.invalid(
                f"max_tokens is too large: {request.max_tokens}. The demo models answer with "
                f"at most {MAX_DEMO_TOKENS} tokens.",
                param="max_tokens",
                code="invalid_value",
            )
        # One word beyond the limit: the filler never ends by itself, so max_tokens cuts it.
        count = DEFAULT_LOREM_TOKENS if request.max_tokens is None else request.max_tokens + 1
        return _generate(request, options, _lorem(count))

    return {"echo": echo, "lorem": lorem}
