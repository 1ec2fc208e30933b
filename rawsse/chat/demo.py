"""The demo models, ``echo`` and ``lorem``: model backends for trying and load-testing rawsse.

Contract: ``demo_models(token_delay_s)`` returns ``{"echo": ..., "lorem": ...}``, two
``ModelBackend``s that generate without any model, paced like one. What they answer (the
words, ``max_tokens``, ``n``, the ``rawsse`` options) is the pure ``rawsse.chat.demo_script``;
this module is the pacing around it: the first step after ``ttft_s``, each later one a gap
after the one before, on the server's shared timer (``rawsse.sleep``: one heap entry per step,
not a task per stream). Each model validates its options when called, so a bad option fails
before any frame, and returns the async generator of its deltas. The models and their options
are documented once, in docs/demo-models.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio.lowlevel

from rawsse._runtime.ticker import sleep
from rawsse.chat.deltas import Delta, ModelBackend
from rawsse.chat.demo_script import (
    DEFAULT_LOREM_TOKENS,
    MAX_DEMO_TOKENS,
    DemoAnswer,
    TokenGaps,
    echo_words,
    lorem_words,
    parse_model_options,
)
from rawsse.chat.errors import ChatError
from rawsse.chat.request import ChatRequest

__all__ = ["demo_models"]

# Without a pause between tokens, the model still yields to the event loop this often.
_CHECKPOINT_EVERY = 256


async def _paced(answer: DemoAnswer) -> AsyncIterator[str | Delta]:
    """Yield the answer's steps, paced by its options, then its finish."""
    gaps = TokenGaps(answer.options)
    if answer.options.ttft_s > 0:
        await sleep(answer.options.ttft_s)
    for step, deltas in enumerate(answer.steps()):
        if step:
            gap_s = gaps.next_s()
            if gap_s > 0:
                await sleep(gap_s)
            elif step % _CHECKPOINT_EVERY == 0:
                await anyio.lowlevel.checkpoint()  # unpaced: let other clients in now and then
        for delta in deltas:
            yield delta
    for finish in answer.finish():
        yield finish


def demo_models(token_delay_s: float = 0.02) -> dict[str, ModelBackend]:
    """The demo models ``echo`` and ``lorem``, paced ``token_delay_s`` apart by default."""
    if token_delay_s < 0:
        raise ValueError(f"token_delay_s must be >= 0: {token_delay_s!r}")

    def echo(request: ChatRequest) -> AsyncIterator[str | Delta]:
        """Answer with the last user message's text, verbatim, a word per token."""
        options = parse_model_options(request, token_delay_s)
        return _paced(DemoAnswer(request, options, echo_words(request.last_user_text())))

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
        return _paced(DemoAnswer(request, options, lorem_words(count)))

    return {"echo": echo, "lorem": lorem}
