"""Resume on any process: ``rawsse serve --redis URL`` with ``--workers 4`` on one port, and two
nodes on two ports sharing one Redis, against a real ``redis-server``. Each resume must be
exact: the frames after ``Last-Event-ID``, byte for byte, then live to the dialect's end.
The server processes run on the same backend as the test client (asyncio, then trio)."""

from __future__ import annotations

import random
from typing import Any

import anyio
import httpx
import pytest

from tests.chat_support import (
    RawAnswer,
    check_anthropic,
    check_openai,
    data_of,
    int_ids,
    open_stream,
    openai_body,
    openai_text,
)
from tests.redis_support import RedisServer
from tests.scale.scale_support import node, run_serve

pytestmark = pytest.mark.anyio

COMPLETIONS = "/v1/chat/completions"
# Resumes to check at once: the machine is small and shared.
CONCURRENCY = 10


def events_path(stream_id: str) -> str:
    return f"{COMPLETIONS}/{stream_id}/events"


async def fetch(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
) -> RawAnswer:
    async with client.stream(method, url, json=json_body, headers=headers) as response:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
        return RawAnswer(response.status_code, response.headers, body)


async def ended_in_redis(redis: RedisServer, stream_id: str) -> None:
    """Wait until Redis holds the end of ``stream_id`` (it is sent in the batch after the
    last frame, a moment after the client got it)."""
    with anyio.fail_after(10):
        while redis.command("HGET", f"rawsse:m:{stream_id}", "ended") is None:
            await anyio.sleep(0.01)


def frames_of(body: bytes) -> list[bytes]:
    """A chat body's frames (each ends with its blank line)."""
    return [part + b"\n\n" for part in body.split(b"\n\n") if part]


async def test_workers_resume_every_stream_exactly(redis: RedisServer, anyio_backend: str) -> None:
    """``--workers 4`` sharing one port: 100 streams, each resumed from a random id on a new
    connection (the kernel picks the process): 100 of 100 exact."""
    results: list[str] = []
    rng = random.Random(1404)
    cuts = [rng.randint(0, 12) for _ in range(100)]
    with node("--workers", "4", "--redis", redis.url, "--backend", anyio_backend) as srv:
        limiter = anyio.CapacityLimiter(CONCURRENCY)

        async def one(index: int, client: httpx.AsyncClient) -> None:
            async with limiter:
                body = openai_body("lorem", max_tokens=8, stream_options={"include_usage": True})
                original = await fetch(client, "POST", f"{srv.url}{COMPLETIONS}", json_body=body)
                stream_id = original.headers["x-rawsse-stream-id"]
                frames = frames_of(original.body)
                cut = min(cuts[index], len(frames))
                headers = {"last-event-id": str(cut)} if cut else {}
                resumed = await fetch(
                    client, "GET", f"{srv.url}{events_path(stream_id)}", headers=headers
                )
                # A client that has every frame is told to stop: 204 (see test_chat_resume).
                # On another process the end may not be in Redis yet (it goes in the batch
                # after the last frame, which the client already has): then it is followed
                # to its end, an empty 200.
                statuses = (200,) if cut < len(frames) else (204, 200)
                exact = (
                    resumed.status in statuses
                    and resumed.body == b"".join(frames[cut:])
                    and resumed.headers.get("x-rawsse-replay-gap", "0") == "0"
                )
                results.append("ok" if exact else f"{resumed.status} cut={cut} {resumed.body!r}")

        # A new connection per request, so the kernel spreads them over the workers.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            async with anyio.create_task_group() as tg:
                for index in range(100):
                    tg.start_soon(one, index, client)
    failures = [r for r in results if r != "ok"]
    assert len(results) == 100
    assert not failures, failures[:5]


async def test_workers_resume_live_streams(redis: RedisServer, anyio_backend: str) -> None:
    """Resumes while the streams are still generating (paced model), on any worker: each
    resumed client gets the rest, exactly, and ends with ``[DONE]`` as the original does."""
    with node("--workers", "4", "--redis", redis.url, "--backend", anyio_backend) as srv:
        mismatches: list[str] = []

        async def one() -> None:
            body = openai_body("lorem", max_tokens=20, rawsse={"token_delay_s": 0.02})
            async with open_stream(srv, COMPLETIONS, body=body) as first:
                await first.read_events(4)
                stream_id = first.headers["x-rawsse-stream-id"]
                async with open_stream(
                    srv, events_path(stream_id), method="GET", headers={"last-event-id": "3"}
                ) as resumed:
                    rest = await resumed.read_to_end()
                whole = await first.read_to_end()
            check_openai(whole)
            if resumed.status != 200 or rest != whole[3:]:
                mismatches.append(f"{resumed.status}: {int_ids(rest)} vs {int_ids(whole)}")

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)
    assert not mismatches, mismatches


async def test_two_nodes_resume_live_and_after_the_end(
    redis: RedisServer, anyio_backend: str
) -> None:
    """Node A generates, the client leaves (resume grace keeps A generating), comes back on
    node B with its last id and follows the stream live to [DONE]; a later resume on B
    replays everything; an Anthropic stream resumes on B by its message id."""
    common = ("--redis", redis.url, "--backend", anyio_backend, "--resume-grace", "10")
    with node(*common) as a, node(*common) as b:
        body = openai_body("lorem", max_tokens=40, rawsse={"token_delay_s": 0.02})
        async with open_stream(a, COMPLETIONS, body=body) as first:
            seen = await first.read_events(5)
            stream_id = first.headers["x-rawsse-stream-id"]
        async with open_stream(
            b, events_path(stream_id), method="GET", headers={"last-event-id": "5"}
        ) as back:
            assert back.status == 200
            assert back.headers["x-rawsse-replay-gap"] == "0"
            rest = await back.read_to_end()
        whole = seen + rest
        check_openai(whole)
        assert int_ids(whole) == list(range(1, len(whole) + 1))
        assert len(openai_text(whole).split()) == 40
        assert data_of(whole)[-2]["choices"][0]["finish_reason"] == "length"
        async with httpx.AsyncClient(timeout=30) as client:
            replay = await fetch(client, "GET", f"{b.url}{events_path(stream_id)}")
            anthropic = await fetch(
                client,
                "POST",
                f"{a.url}/v1/messages",
                json_body={
                    "model": "echo",
                    "max_tokens": 100,
                    "stream": True,
                    "messages": [{"role": "user", "content": "one two three four five"}],
                },
                headers={"anthropic-version": "2023-06-01"},
            )
            message_id = data_of(anthropic.events)[0]["message"]["id"]
            resumed = await fetch(
                client, "GET", f"{b.url}{events_path(message_id)}", headers={"last-event-id": "4"}
            )
    assert replay.status == 200 and replay.events == whole
    assert replay.headers["x-rawsse-replay-gap"] == "0"
    check_anthropic(anthropic.events)
    assert resumed.status == 200 and resumed.events == anthropic.events[4:]


async def test_a_client_resumed_elsewhere_keeps_the_producer_past_its_grace(
    redis: RedisServer, anyio_backend: str
) -> None:
    """The grace counts the producing process's clients; one that resumed on another process
    keeps the stream going too (it says so through Redis), to [DONE], long past the grace."""
    common = ("--redis", redis.url, "--backend", anyio_backend, "--resume-grace", "1")
    with node(*common) as a, node(*common) as b:
        body = openai_body("lorem", max_tokens=40, rawsse={"token_delay_s": 0.1})
        async with open_stream(a, COMPLETIONS, body=body) as first:
            seen = await first.read_events(3)
            stream_id = first.headers["x-rawsse-stream-id"]
        async with open_stream(
            b, events_path(stream_id), method="GET", headers={"last-event-id": "3"}
        ) as back:
            rest = await back.read_to_end(timeout_s=30)  # ~4 s of tokens: 4 graces
    whole = seen + rest
    check_openai(whole)
    assert not any("error" in d for d in data_of(whole) if isinstance(d, dict))
    assert len(openai_text(whole).split()) == 40


async def test_resume_on_other_node_after_trim_reports_the_gap(
    redis: RedisServer, anyio_backend: str
) -> None:
    """A resume from an id Redis no longer keeps is answered with what is kept and the gap
    header, on the other node as on this one; an unknown id likewise."""
    app = "tests.scale.apps:trimmed_chat_app"
    common = ("--redis", redis.url, "--backend", anyio_backend)
    with node(app, *common) as a, node(app, *common) as b:
        async with httpx.AsyncClient(timeout=30) as client:
            text = " ".join(f"w{i}" for i in range(20))
            original = await fetch(
                client, "POST", f"{a.url}{COMPLETIONS}", json_body=openai_body("echo", text)
            )
            stream_id = original.headers["x-rawsse-stream-id"]
            answers = [
                await fetch(client, "GET", f"{url}{events_path(stream_id)}", headers=headers)
                for url in (a.url, b.url)
                for headers in ({"last-event-id": "2"}, {"last-event-id": "nope"})
            ]
    events = original.events
    check_openai(events)
    kept = events[-5:]  # the app keeps 5 frames per stream
    for answer in answers:
        assert answer.status == 200, answer.body
        assert answer.headers["x-rawsse-replay-gap"] == "1"
        assert answer.headers["x-rawsse-replay-from"] == str(len(events) - 4)
        assert answer.events == kept


async def test_workers_without_redis_warn_and_explain_the_404(anyio_backend: str) -> None:
    """``--workers 2`` alone: a warning at start, and a resume that lands on the other
    process is a 404 that says why and what to set."""
    statuses: list[int] = []
    with node("--workers", "2", "--backend", anyio_backend) as srv:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            original = await fetch(
                client, "POST", f"{srv.url}{COMPLETIONS}", json_body=openai_body()
            )
            stream_id = original.headers["x-rawsse-stream-id"]
            not_found = None
            for _ in range(40):  # each on a new connection: the kernel picks the process
                answer = await fetch(client, "GET", f"{srv.url}{events_path(stream_id)}")
                statuses.append(answer.status)
                if answer.status == 404:
                    not_found = answer
                    break
        warning = srv.stderr()
    assert warning.count("without --redis") == 1 and "RAWSSE_REDIS_URL" in warning
    assert not_found is not None, statuses
    message = not_found.json()["error"]["message"]
    assert "another process" in message and "--redis" in message


def test_unreachable_redis_at_start_is_one_line_and_exit_1() -> None:
    result = run_serve("--redis", "redis://someone:s3cret@127.0.0.1:9/0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rawsse serve: cannot reach Redis at redis://***@127.0.0.1:9/0")
    assert "s3cret" not in result.stderr + result.stdout
    assert result.stdout == ""
