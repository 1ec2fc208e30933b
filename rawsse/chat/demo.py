"""The demo models, ``echo`` and ``lorem``: model backends for trying and load-testing rawsse.

Contract: ``demo_models(token_delay_s)`` returns ``{"echo": ..., "lorem": ...}``, two
``ModelBackend``s that generate without any model, paced like one. What they answer (the
words, ``max_tokens``, ``n``, the ``rawsse`` options) is the pure ``rawsse.chat.demo_script``;
this module is the pacing around it: the first step after ``ttft_s``, each later one a gap
after the one before, on the server's shared timer (``rawsse.sleep``: one heap entry per step,
not a task per stream). Each model validates its options when called, so a bad option fails
before any frame, and returns its answer as a ``PacedAnswer``: an async iterator of its deltas
that can also say how long to wait before the next one (``wait_s``) and hand it over without
awaiting (``take``), so the chat producer waits in its own frame and a held stream keeps no
coroutine of the model's. The models and their options are documented once, in
docs/demo-models.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

import anyio.lowlevel

from rawsse._runtime.ticker import sleep
from rawsse.chat.deltas import Delta, ModelBackend
from rawsse.chat.demo_script import (
    DEFAULT_LOREM_TOKENS,
    MAX_DEMO_TOKENS,
    DemoAnswer,
    ModelOptions,
    TokenGaps,
    parse_model_options,
)
from rawsse.chat.errors import ChatError
from rawsse.chat.request import ChatRequest

__all__ = ["PacedAnswer", "demo_models", "pause"]

# Without a pause between tokens, the model still yields to the event loop this often.
_CHECKPOINT_EVERY = 256


class PacedAnswer(DemoAnswer):
    """A demo answer as the model's async iterator of deltas, paced by its options.

    The first step comes after ``ttft_s``, each later one a gap after the one before (drawn
    once the step is known: a failure or the end comes without a gap); then every choice's
    ``Finish``. Iterate it as any model (``async for``), or, as the chat producer does, ask
    ``wait_s()`` how long to wait, wait that yourself, then ``take()`` the delta: a held
    stream then waits in its producer's frame, with no coroutine of the model's.
    """

    __slots__ = ("delay", "index", "pending", "state", "ttft_s")

    def __init__(self, request: ChatRequest, options: ModelOptions, words: str | int) -> None:
        super().__init__(request, options, words)
        self.ttft_s = options.ttft_s
        # Only a random distribution needs its generator (TokenGaps); a fixed gap is a float.
        self.delay: float | TokenGaps = (
            options.token_delay_s if options.delay_dist == "fixed" else TokenGaps(options)
        )
        # The row being handed over: a tuple of deltas, or the delta of a row of one.
        self.pending: tuple[str | Delta, ...] | str | Delta | None = None
        self.index = 0  # its next delta
        self.state = _NEW

    def __aiter__(self) -> PacedAnswer:
        return self

    async def __anext__(self) -> str | Delta:
        wait_s = self.wait_s()
        if wait_s is not None:
            await pause(wait_s)
        return self.take()

    async def aclose(self) -> None:
        """End the answer: later ``__anext__`` calls raise ``StopAsyncIteration``. (Nothing to
        clean up: the chat producer closes it without awaiting this.)"""
        self.close()

    def close(self) -> None:
        """``aclose`` without a checkpoint."""
        self.pending = None
        self.state = _DONE

    def wait_s(self) -> float | None:
        """Get the next delta ready; how long to wait before taking it: None for no wait,
        0 for a checkpoint only (an unpaced answer lets other clients in now and then)."""
        if self.pending is not None or self.state >= _FINISHING:
            return None
        if self.state == _NEW:
            self.state = _STEPPING
            return self.ttft_s if self.ttft_s > 0 else None  # the first step: take() makes it
        step = self.step
        if not self._load():
            return None
        delay = self.delay
        gap_s = delay.next_s() if isinstance(delay, TokenGaps) else delay
        if gap_s > 0:
            return gap_s
        return 0.0 if step % _CHECKPOINT_EVERY == 0 else None

    def take(self) -> str | Delta:
        """The next delta (after ``wait_s`` and its wait); ``StopAsyncIteration`` at the end,
        the injected ``ChatError`` at its step."""
        row = self.pending
        if row is None:
            if self.state == _DONE:
                raise StopAsyncIteration
            self._load()  # the first step, after its wait
            row = self.pending
            assert row is not None
        if not isinstance(row, tuple):  # a row of one
            self._taken()
            return row
        index = self.index
        if index + 1 < len(row):
            self.index = index + 1
        else:
            self._taken()
        return row[index]

    def _taken(self) -> None:
        """The pending row was handed over."""
        self.pending = None
        self.index = 0
        if self.state == _FINISHING:
            self.state = _DONE

    def _load(self) -> bool:
        """Make the next step the pending row (True), or the finish once the steps ran out."""
        try:
            row = self.next_step()
        except ChatError:
            self.state = _DONE  # raised once, as a generator's error ends it
            raise
        if row is not None:
            # A row of one delta is kept as the delta (a held stream waits with it pending).
            self.pending = row[0] if len(row) == 1 else row
            return True
        finishes = self.finish()
        self.pending = finishes[0] if len(finishes) == 1 else tuple(finishes)
        self.state = _FINISHING
        return False


# PacedAnswer's states.
_NEW, _STEPPING, _FINISHING, _DONE = range(4)


def pause(seconds: float) -> Awaitable[None]:
    """Wait ``seconds`` on the server's shared timer; 0 is one checkpoint."""
    return sleep(seconds) if seconds > 0 else anyio.lowlevel.checkpoint()


def demo_models(token_delay_s: float = 0.02) -> dict[str, ModelBackend]:
    """The demo models ``echo`` and ``lorem``, paced ``token_delay_s`` apart by default."""
    if token_delay_s < 0:
        raise ValueError(f"token_delay_s must be >= 0: {token_delay_s!r}")

    def echo(request: ChatRequest) -> AsyncIterator[str | Delta]:
        """Answer with the last user message's text, verbatim, a word per token."""
        options = parse_model_options(request, token_delay_s)
        return PacedAnswer(request, options, request.last_user_text())

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
        return PacedAnswer(request, options, count)

    return {"echo": echo, "lorem": lorem}
