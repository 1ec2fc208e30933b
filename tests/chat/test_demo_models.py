"""The demo models, on both backends: verbatim echo, exact lorem, max_tokens, pacing, options."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import anyio
import pytest

from rawsse.chat import (
    ANTHROPIC,
    OPENAI,
    ChatError,
    ChatRequest,
    Delta,
    Finish,
    ModelOptions,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    check_anthropic_stream,
    check_openai_stream,
    demo_models,
    parse_model_options,
    parse_openai,
)
from rawsse.chat.demo import PacedAnswer
from rawsse.chat.demo_script import TokenGaps
from tests.chat.dialect_support import CREATED, STREAM_ID, parse_frames

pytestmark = pytest.mark.anyio

MODELS = demo_models(token_delay_s=0)


def request(text: str = "hello there", **fields: Any) -> ChatRequest:
    body = {"model": "echo", "messages": [{"role": "user", "content": text}]}
    body.update(fields)
    return parse_openai(body)


async def collect(deltas: AsyncIterator[str | Delta]) -> list[str | Delta]:
    return [delta async for delta in deltas]


async def collect_until_error(
    deltas: AsyncIterator[str | Delta],
) -> tuple[list[str | Delta], ChatError]:
    """The deltas yielded before the model raised ChatError, and the error."""
    got: list[str | Delta] = []
    while True:
        try:
            got.append(await deltas.__anext__())
        except StopAsyncIteration:
            raise AssertionError("the model did not fail") from None
        except ChatError as error:
            return got, error


def text_of(deltas: list[str | Delta]) -> str:
    return "".join(
        d if isinstance(d, str) else d.text for d in deltas if isinstance(d, str | TextDelta)
    )


async def test_echo_is_verbatim_in_several_tokens() -> None:
    text = "  Hello,  world!\n\tSecond line  "
    deltas = await collect(MODELS["echo"](request(text)))
    assert deltas[-1] == Finish("stop")
    tokens = deltas[:-1]
    assert all(isinstance(token, str) for token in tokens)
    assert "".join(str(token) for token in tokens) == text
    assert tokens == ["  ", "Hello,  ", "world!\n\t", "Second ", "line  "]


async def test_echo_honours_max_tokens() -> None:
    deltas = await collect(MODELS["echo"](request("a b c d", max_tokens=2)))
    assert deltas == ["a ", "b ", Finish("length")]
    deltas = await collect(MODELS["echo"](request("a b", max_tokens=2)))
    assert deltas == ["a ", "b", Finish("stop")]


async def test_echo_of_nothing_just_stops() -> None:
    body = {"model": "echo", "messages": [{"role": "system", "content": "x"}]}
    assert await collect(MODELS["echo"](parse_openai(body))) == [Finish("stop")]


async def test_lorem_gives_exactly_max_tokens() -> None:
    deltas = await collect(MODELS["lorem"](request()))
    assert len(deltas) == 17
    assert deltas[-1] == Finish("stop")
    assert text_of(deltas).startswith("Lorem ipsum dolor sit amet")
    for max_tokens in (1, 5, 100):
        deltas = await collect(MODELS["lorem"](request(max_tokens=max_tokens)))
        assert len(deltas) == max_tokens + 1
        assert deltas[-1] == Finish("length")


async def test_n_choices_interleave() -> None:
    deltas = await collect(MODELS["echo"](request("a b", n=2)))
    assert deltas == [
        "a ",
        TextDelta("a ", 1),
        "b",
        TextDelta("b", 1),
        Finish("stop", 0),
        Finish("stop", 1),
    ]


async def test_pacing_first_token_at_once_then_one_per_delay() -> None:
    models = demo_models(token_delay_s=0.1)
    deltas = models["lorem"](request(max_tokens=3))
    start = anyio.current_time()
    stamps = [anyio.current_time() - start async for _ in deltas]
    assert stamps[0] < 0.05
    # Sleeps never end early: three tokens are at least two delays apart.
    assert stamps[2] >= 0.2


async def test_ttft_option_delays_the_first_token() -> None:
    deltas = MODELS["echo"](request("x", rawsse={"ttft_s": 0.1}))
    start = anyio.current_time()
    first = await deltas.__anext__()
    assert first == "x"
    assert anyio.current_time() - start >= 0.1
    await deltas.aclose()  # type: ignore[attr-defined]


async def test_reasoning_answer() -> None:
    deltas = await collect(MODELS["echo"](request("hi", rawsse={"answer": "reasoning"})))
    reasoning = [d for d in deltas if isinstance(d, ReasoningDelta)]
    assert "".join(d.text for d in reasoning) == "Thinking about the answer before giving it."
    assert deltas[len(reasoning) :] == ["hi", Finish("stop")]


async def test_tool_call_answer() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    deltas = await collect(
        MODELS["lorem"](request("Paris?", tools=tools, rawsse={"answer": "tool_call"}))
    )
    assert deltas[0] == ToolCallDelta(0, name="get_weather")
    calls = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert "".join(d.arguments for d in calls) == '{"query":"Paris?"}'
    assert len(calls) > 2
    assert deltas[-1] == Finish("tool_calls")
    no_tools = await collect(MODELS["echo"](request("x", rawsse={"answer": "tool_call"})))
    assert no_tools[0] == ToolCallDelta(0, name="lookup")


async def test_fail_after_k_tokens() -> None:
    deltas = MODELS["lorem"](request(rawsse={"fail_after": 3, "fail_status": 503}))
    got, error = await collect_until_error(deltas)
    assert len(got) == 3
    assert (error.status, error.code) == (503, "injected_failure")
    assert "after 3 tokens" in error.message


async def test_fail_after_more_tokens_than_the_answer_fails_at_the_end() -> None:
    deltas = MODELS["echo"](request("a b", rawsse={"fail_after": 10}))
    got, error = await collect_until_error(deltas)
    assert got == ["a ", "b"]
    assert error.status == 500


@pytest.mark.parametrize(
    ("options", "param", "message"),
    [
        ({"speed": 1}, "rawsse.speed", "Unknown option 'rawsse.speed'"),
        ({"ttft_s": -1}, "rawsse.ttft_s", "Expected a value >= 0"),
        ({"token_delay_s": 61}, "rawsse.token_delay_s", "Expected a value <= 60"),
        ({"delay_dist": "normal"}, "rawsse.delay_dist", "'fixed', 'uniform' and 'exponential'"),
        ({"seed": "x"}, "rawsse.seed", "expected an integer"),
        ({"answer": "image"}, "rawsse.answer", "'text', 'reasoning' and 'tool_call'"),
        ({"fail_after": -1}, "rawsse.fail_after", "Expected a value >= 0"),
        ({"fail_status": 200}, "rawsse.fail_status", "Expected a value >= 400"),
    ],
)
async def test_invalid_options_fail_before_the_first_token(
    options: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(ChatError) as info:
        MODELS["echo"](request(rawsse=options))
    assert (info.value.status, info.value.param) == (400, param)
    assert message in info.value.message


async def test_option_defaults_come_from_server_and_request() -> None:
    options = parse_model_options(request(seed=9), token_delay_s=0.5)
    assert options == ModelOptions(token_delay_s=0.5, seed=9)


async def test_gap_distributions() -> None:
    fixed = TokenGaps(ModelOptions(token_delay_s=0.01))
    assert [fixed.next_s() for _ in range(3)] == [0.01, 0.01, 0.01]
    for dist in ("uniform", "exponential"):
        options = ModelOptions(token_delay_s=0.01, delay_dist=dist, seed=7)  # type: ignore[arg-type]
        first = [TokenGaps(options).next_s() for _ in range(1)]
        gaps = TokenGaps(options)
        sample = [gaps.next_s() for _ in range(2000)]
        assert [TokenGaps(options).next_s()] == first  # seeded: reproducible
        assert len(set(sample)) > 1900
        assert min(sample) >= 0
        assert 0.009 < sum(sample) / len(sample) < 0.011
        if dist == "uniform":
            assert max(sample) <= 0.02


async def test_models_through_dialects_keep_the_grammar() -> None:
    models = demo_models(token_delay_s=0.001)
    req = request("one two three", n=2, stream=True, stream_options={"include_usage": True})
    # stream=False keeps the text, for response_body (the frames are the same).
    stream = OPENAI.new_stream(replace(req, stream=False), STREAM_ID, CREATED)
    frames = stream.start()
    async for delta in models["echo"](req):
        frames += stream.feed(delta)
    frames += stream.finish()
    check_openai_stream(parse_frames(frames), require_ids=True)
    body = stream.response_body()
    assert [c["message"]["content"] for c in body["choices"]] == ["one two three"] * 2
    assert body["usage"]["completion_tokens"] == 6

    anthropic_req = ANTHROPIC.parse_request(
        {
            "model": "lorem",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "rawsse": {"answer": "reasoning"},
        }
    )
    stream = ANTHROPIC.new_stream(replace(anthropic_req, stream=False), STREAM_ID, CREATED)
    frames = stream.start()
    async for delta in models["lorem"](anthropic_req):
        frames += stream.feed(delta)
    frames += stream.finish()
    check_anthropic_stream(parse_frames(frames), require_ids=True)
    assert stream.response_body()["stop_reason"] == "max_tokens"
    assert stream.response_body()["usage"]["output_tokens"] == 5


async def _peak_bytes_to_first_token(max_tokens: int, n: int) -> int:
    req = request(max_tokens=max_tokens, n=n)
    tracemalloc.start()
    try:
        deltas = MODELS["lorem"](req)
        await deltas.__anext__()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    await deltas.aclose()  # type: ignore[attr-defined]
    return peak


async def test_memory_to_the_first_token_does_not_grow_with_max_tokens_and_n() -> None:
    """Tokens are made as they are yielded: the largest answer starts as cheaply as the
    smallest (it took 51 MiB before its first token when the whole answer was planned)."""
    small = await _peak_bytes_to_first_token(max_tokens=10, n=1)
    large = await _peak_bytes_to_first_token(max_tokens=100_000, n=8)
    assert large < small + 32 * 1024, (small, large)


async def test_closing_mid_stream_stops_the_model() -> None:
    models = demo_models(token_delay_s=10)
    deltas = models["lorem"](request(max_tokens=1000))
    assert await deltas.__anext__() == "Lorem"
    with anyio.fail_after(5):
        await deltas.aclose()  # type: ignore[attr-defined]
    with pytest.raises(StopAsyncIteration):
        await deltas.__anext__()


def test_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="token_delay_s"):
        demo_models(token_delay_s=-1)


async def test_a_held_answer_keeps_neither_the_request_nor_a_coroutine() -> None:
    """A held stream's model and dialect state is a few fields: the parsed messages go once
    the model has them, and a paced wait is the caller's, not a generator's."""
    models = demo_models(token_delay_s=10)
    for name in ("echo", "lorem"):
        req = request("a message to answer", stream=True, max_tokens=5)
        deltas = models[name](req)
        frames = OPENAI.new_stream(req, STREAM_ID, CREATED)
        assert isinstance(deltas, PacedAnswer)
        assert deltas.wait_s() is None  # the first token comes at once
        assert deltas.take() == ("a " if name == "echo" else "Lorem")
        assert deltas.wait_s() == 10  # the next one: the caller waits, then takes it
        held = [deltas, frames, frames.transcript]
        referents = [r for obj in held for r in gc.get_referents(obj)]
        assert req not in referents
        assert not any(r is m for r in referents for m in req.messages)
        assert frames.request.messages == ()
        assert frames.request is OPENAI.new_stream(req, "other", CREATED).request  # shared
