"""Faults with real processes and a real ``redis-server``: the generating node killed mid-stream,
and Redis lost mid-stream. (Start-up without Redis: test_resume_across_processes; a killed
Pub/Sub connection, a slow Redis, a Redis restarted empty: tests/streams/test_replay_redis.)"""

from __future__ import annotations

import re

import anyio
import httpx
import pytest

from tests.chat_support import check_openai, data_of, int_ids, open_stream, openai_body
from tests.redis_support import RedisServer
from tests.scale.scale_support import node

pytestmark = pytest.mark.anyio

COMPLETIONS = "/v1/chat/completions"


def events_path(stream_id: str) -> str:
    return f"{COMPLETIONS}/{stream_id}/events"


async def test_killed_generating_node_ends_the_resumed_stream_with_the_error_frame(
    redis: RedisServer, anyio_backend: str
) -> None:
    """Node A generates; a client follows on node B; A is SIGKILLed. B's client gets the
    OpenAI error frame and [DONE] after a bounded wait (A's lease runs out), not a hang; a
    later resume anywhere ends the same way (the end is in Redis, once)."""
    common = ("--redis", redis.url, "--backend", anyio_backend, "--resume-grace", "30")
    with node(*common) as b:
        with node(*common) as a:
            body = openai_body("lorem", max_tokens=2000, rawsse={"token_delay_s": 0.05})
            async with open_stream(a, COMPLETIONS, body=body) as first:
                await first.read_events(3)
                stream_id = first.headers["x-rawsse-stream-id"]
            async with open_stream(
                b, events_path(stream_id), method="GET", headers={"last-event-id": "3"}
            ) as resumed:
                await resumed.read_events(2)  # following A live, through Redis
                a.kill()
                with anyio.fail_after(30):  # A's lease is 3 s; B polls every second
                    rest = await resumed.read_to_end(timeout_s=30)
        async with httpx.AsyncClient(timeout=30) as client:
            later = await client.get(f"{b.url}{events_path(stream_id)}")
    *_, error, done = data_of(rest)
    assert done == "[DONE]"
    assert error["error"]["code"] == "stream_producer_lost"
    assert int_ids(rest) == list(range(4, 4 + len(rest)))  # numbered on from the last frame
    check_openai(first.events + rest)
    assert later.status_code == 200
    assert later.text.endswith("data: [DONE]\n\n")
    assert '"stream_producer_lost"' in later.text


async def test_redis_lost_mid_stream_live_clients_keep_streaming(
    redis: RedisServer, anyio_backend: str
) -> None:
    """Redis dies while a stream is live: its client reads on to [DONE]; the node counts the
    appends it dropped (``rawsse_replay_errors_total``) and logs it once; a resume on the
    other node is told history is unavailable (503); once Redis is back, new streams resume
    across nodes again."""
    common = ("--redis", redis.url, "--backend", anyio_backend, "--log-level", "warning")
    with node(*common) as a, node(*common) as b:
        async with httpx.AsyncClient(timeout=30) as client:
            body = openai_body("lorem", max_tokens=40, rawsse={"token_delay_s": 0.02})
            async with open_stream(a, COMPLETIONS, body=body) as live:
                await live.read_events(5)
                stream_id = live.headers["x-rawsse-stream-id"]
                redis.kill()
                whole = await live.read_to_end()
            while_down = await client.get(
                f"{b.url}{events_path(stream_id)}", headers={"last-event-id": "3"}
            )
            same_node = await client.get(
                f"{a.url}{events_path(stream_id)}", headers={"last-event-id": "3"}
            )
            metrics = (await client.get(f"{a.url}/metrics")).text
            redis.start()
            with anyio.fail_after(30):  # the nodes reconnect (with backoff)
                while True:
                    fresh = await client.post(f"{a.url}{COMPLETIONS}", json=openai_body())
                    resumed = await client.get(
                        f"{b.url}{events_path(fresh.headers['x-rawsse-stream-id'])}"
                    )
                    if resumed.status_code == 200:
                        break
                    await anyio.sleep(0.2)
        log_a = a.stderr()
    check_openai(whole)
    assert len(whole) == 43  # role, 40 tokens, finish, [DONE]: nothing lost live
    assert while_down.status_code == 503
    assert while_down.json()["error"]["code"] == "replay_unavailable"
    assert same_node.status_code == 200  # this node still has it
    dropped = int(re.search(r"^rawsse_replay_errors_total (\d+)", metrics, re.M).group(1))  # type: ignore[union-attr]
    assert dropped > 0
    assert log_a.count("unavailable") == 1, log_a
    assert resumed.text == fresh.text
