"""End to end, resume: ``GET /v1/chat/completions/{id}/events`` with ``Last-Event-ID``.

A chat stream's frames are kept in the replay store under its id (``x-rawsse-stream-id``);
a client that comes back gets the frames after the last id it saw, then follows the stream
live until it ends. Covered on asyncio and trio: resume while the stream is live, after it
ended, after it was cancelled (client left, no grace), with a resume grace (the producer keeps
running and the resumed client follows it live to ``[DONE]``), beyond the replay buffer (gap
header), unknown ids, authentication, and an Anthropic stream. Clients: raw sockets,
httpx-sse, and rawsse's own ``rawsse.client.connect``.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from rawsse.client import connect
from rawsse.replay import MemoryReplayStore
from rawsse.sse import Event
from rawsse.stream import EventStream
from tests.chat_support import (
    KEY,
    TLS_CONTEXT,
    USER_TEXT,
    ChatServer,
    ProbeModel,
    anthropic_body,
    anthropic_headers,
    anthropic_text,
    bearer,
    chat_server,
    check_anthropic,
    check_openai,
    data_of,
    demo_server,
    get,
    int_ids,
    open_stream,
    openai_body,
    openai_text,
    post,
    stream_id_of,
)

pytestmark = pytest.mark.anyio

COMPLETIONS = "/v1/chat/completions"


def store_in_use(store: MemoryReplayStore) -> MemoryReplayStore:
    """Work around the empty-store bug (``test_mount_uses_the_replay_store_it_is_given``):
    a store holding one entry is truthy, so ``mount_chat`` keeps it."""
    store.append_nowait("warm-up", "1", b": warm-up\n\n")
    return store


def events_path(stream_id: str) -> str:
    return f"{COMPLETIONS}/{stream_id}/events"


def last_id(events: list[Event]) -> str:
    ids = [e.id for e in events if e.id is not None]
    assert ids
    return ids[-1]


def assert_continues(before: list[Event], after: list[Event]) -> None:
    """``after`` picks up right after ``before``: consecutive ids, no gap, no duplicate."""
    ids = int_ids(before) + int_ids(after)
    assert ids == list(range(1, len(ids) + 1)), ids


async def test_resume_while_the_stream_is_live(anyio_backend: str) -> None:
    """A second client resumes from id 3 while the first still reads; both reach [DONE]."""
    probe = ProbeModel(tokens=10, delay_s=0, gate_after=4)
    async with chat_server({"probe": probe}) as srv:
        body = openai_body("probe", stream_options={"include_usage": True})
        async with open_stream(srv, COMPLETIONS, body=body) as first:
            await first.read_events(5)  # the role chunk and t0..t3; the probe waits at t4
            stream_id = stream_id_of(first)
            headers = {"last-event-id": "3"}
            async with open_stream(
                srv, events_path(stream_id), method="GET", headers=headers
            ) as resumed:
                assert resumed.status == 200
                assert resumed.headers["x-rawsse-replay-from"] == "4"
                assert resumed.headers["x-rawsse-replay-gap"] == "0"
                assert resumed.headers["x-rawsse-stream-id"] == stream_id
                await resumed.read_events(2)  # ids 4 and 5, replayed
                probe.gate.set()  # the rest is live
                live = await resumed.read_to_end()
            whole = await first.read_to_end()
    check_openai(whole)
    assert int_ids(live) == list(range(4, len(whole) + 1))
    assert [e.data for e in live] == [e.data for e in whole[3:]]
    check_openai(whole[:3] + live)
    assert openai_text(live) == "".join(f"t{i} " for i in range(2, 10))  # id 4 is t2
    assert data_of(live)[-2]["usage"]["completion_tokens"] == 10
    assert probe.completed


async def test_resume_after_the_stream_ended(anyio_backend: str) -> None:
    async with demo_server() as srv:
        original = await post(srv, COMPLETIONS, openai_body(stream_options={"include_usage": True}))
        stream_id = stream_id_of(original)
        everything = await get(srv, events_path(stream_id))
        after_two = await get(srv, events_path(stream_id), {"last-event-id": "2"})
        # The vendor id (chatcmpl-...) names the same stream.
        chunk_id = data_of(original.events)[0]["id"]
        by_chunk_id = await get(srv, events_path(chunk_id), {"last-event-id": "2"})
        at_end = await get(srv, events_path(stream_id), {"last-event-id": last_id(original.events)})
    check_openai(original.events)
    assert everything.status == 200
    assert everything.headers["content-type"].startswith("text/event-stream")
    assert everything.headers["x-rawsse-replay-from"] == "1"
    assert everything.headers["x-rawsse-replay-gap"] == "0"
    assert everything.body == original.body
    assert after_two.headers["x-rawsse-replay-from"] == "3"
    assert after_two.events == original.events[2:]
    assert_continues(original.events[:2], after_two.events)
    assert by_chunk_id.body == after_two.body
    # The client has it all: 204, which stops an EventSource (an empty 200 would not).
    assert at_end.status == 204 and at_end.body == b""
    assert at_end.headers["x-rawsse-replay-from"] == ""
    assert openai_text(everything.events) == USER_TEXT


async def test_resume_a_cancelled_stream_ends_with_the_error_frame(anyio_backend: str) -> None:
    """No grace: the client left, the backend was cancelled, the replay says so and ends."""
    probe = ProbeModel(tokens=10_000, delay_s=0.005)
    async with chat_server({"probe": probe}) as srv:
        async with open_stream(srv, COMPLETIONS, body=openai_body("probe")) as first:
            seen = await first.read_events(4)
            stream_id = stream_id_of(first)
        with anyio.fail_after(5):
            await probe.closed.wait()
        resumed = await get(srv, events_path(stream_id), {"last-event-id": last_id(seen)})
        replay = await get(srv, events_path(stream_id))
    assert not probe.completed
    assert resumed.status == 200
    events = resumed.events
    assert_continues(seen, events)
    *_, error, done = data_of(events)
    assert done == "[DONE]"
    assert error["error"]["code"] == "stream_cancelled"
    assert error["error"]["type"] == "server_error"
    assert "cancelled" in error["error"]["message"]
    check_openai(seen + events)
    check_openai(replay.events)
    assert replay.events[: len(seen)] == seen


async def test_resume_with_grace_follows_the_producer_live(anyio_backend: str) -> None:
    """With resume_grace_s the producer outlives its client; the resumed client follows it."""
    probe = ProbeModel(tokens=12, delay_s=0, gate_after=4)
    async with chat_server({"probe": probe}, resume_grace_s=5.0) as srv:
        body = openai_body("probe", stream_options={"include_usage": True})
        async with open_stream(srv, COMPLETIONS, body=body) as first:
            seen = await first.read_events(5)
            stream_id = stream_id_of(first)
        await anyio.sleep(0.1)
        assert not probe.closed.is_set()  # the client left; the producer did not stop
        headers = {"last-event-id": last_id(seen)}
        async with open_stream(srv, events_path(stream_id), method="GET", headers=headers) as back:
            assert back.headers["x-rawsse-replay-gap"] == "0"
            probe.gate.set()
            rest = await back.read_to_end()
    assert probe.completed
    assert_continues(seen, rest)
    whole = seen + rest
    check_openai(whole)
    assert not any("error" in d for d in data_of(whole) if isinstance(d, dict))
    assert openai_text(whole) == "".join(f"t{i} " for i in range(12))
    assert data_of(rest)[-2]["usage"]["completion_tokens"] == 12


async def test_demo_app_resume_grace_with_rawsse_client(anyio_backend: str) -> None:
    """The demo app as ``rawsse serve --resume-grace`` builds it, read with rawsse's client:
    leave mid-stream, come back with the last id, follow the paced model live to [DONE]."""
    async with demo_server(resume_grace_s=5.0) as srv:
        body = openai_body("lorem", max_tokens=30, rawsse={"token_delay_s": 0.01})
        seen: list[Event] = []
        async with connect(f"{srv.url}{COMPLETIONS}", json=body) as response:
            stream_id = response.head.header("x-rawsse-stream-id")
            async for event in response:
                seen.append(event)
                if len(seen) == 5:
                    break
            last = response.parser.last_event_id
        assert stream_id and last == "5"
        rest: list[Event] = []
        async with connect(
            f"{srv.url}{events_path(stream_id)}", last_event_id=last, read_timeout_s=5
        ) as response:
            assert response.head.header("x-rawsse-replay-gap") == "0"
            rest = [event async for event in response]
    assert_continues(seen, rest)
    whole = seen + rest
    check_openai(whole)
    assert len(openai_text(whole).split()) == 30
    assert data_of(whole)[-2]["choices"][0]["finish_reason"] == "length"


async def test_a_finished_stream_resumed_from_its_last_id_is_204(anyio_backend: str) -> None:
    """204 No Content is what stops an EventSource: the client has the whole stream."""
    async with demo_server() as srv:
        original = await post(srv, COMPLETIONS, openai_body())
        stream_id = stream_id_of(original)
        last = last_id(original.events)
        done = await get(srv, events_path(stream_id), {"last-event-id": last})
        before_last = await get(srv, events_path(stream_id), {"last-event-id": str(int(last) - 1)})
        unknown = await get(srv, events_path(stream_id), {"last-event-id": "999"})
    assert (done.status, done.body) == (204, b"")
    assert done.headers["x-rawsse-replay-gap"] == "0"
    assert before_last.status == 200
    assert [e.data for e in before_last.events] == ["[DONE]"]
    assert unknown.status == 200  # not one of its ids: everything, with the gap said
    assert unknown.headers["x-rawsse-replay-gap"] == "1"


async def test_grace_that_expires_cancels_the_producer(anyio_backend: str) -> None:
    probe = ProbeModel(tokens=10, delay_s=0, gate_after=3)  # the gate is never opened
    async with chat_server({"probe": probe}, resume_grace_s=0.2) as srv:
        async with open_stream(srv, COMPLETIONS, body=openai_body("probe")) as first:
            seen = await first.read_events(4)
            stream_id = stream_id_of(first)
        with anyio.fail_after(5):
            await probe.closed.wait()
        resumed = await get(srv, events_path(stream_id), {"last-event-id": last_id(seen)})
    assert not probe.completed
    assert_continues(seen, resumed.events)
    error = data_of(resumed.events)[-2]["error"]
    assert error["code"] == "stream_cancelled"
    # It says what happened: a grace was configured, and it ran out.
    assert "within the resume grace (0.2 s)" in error["message"], error["message"]
    assert "no resume grace" not in error["message"]
    check_openai(seen + resumed.events)


async def test_two_followers_one_leaves(anyio_backend: str) -> None:
    """Grace mode: the producer runs while any follower remains, and to the end."""
    probe = ProbeModel(tokens=8, delay_s=0, gate_after=2)
    async with chat_server({"probe": probe}, resume_grace_s=0.1) as srv:
        async with open_stream(srv, COMPLETIONS, body=openai_body("probe")) as first:
            await first.read_events(3)
            stream_id = stream_id_of(first)
            async with open_stream(srv, events_path(stream_id), method="GET") as second:
                await second.read_events(3)
            # The second follower left; the first still holds the producer.
            await anyio.sleep(0.3)  # longer than the grace
            assert not probe.closed.is_set()
            probe.gate.set()
            whole = await first.read_to_end()
    check_openai(whole)
    assert probe.completed


async def test_resume_beyond_the_buffer_reports_a_gap(anyio_backend: str) -> None:
    store = store_in_use(MemoryReplayStore(max_events_per_stream=5))
    text = " ".join(f"w{i}" for i in range(20))
    async with chat_server(replay_store=store) as srv:
        original = await post(srv, COMPLETIONS, openai_body("echo", text))
        stream_id = stream_id_of(original)
        old = await get(srv, events_path(stream_id), {"last-event-id": "2"})
        unknown = await get(srv, events_path(stream_id), {"last-event-id": "not-an-id"})
        kept = await get(
            srv, events_path(stream_id), {"last-event-id": last_id(original.events[:-2])}
        )
    events = original.events
    check_openai(events)
    total = len(events)  # role, 20 words, finish, [DONE]
    first_kept = total - 4
    for answer in (old, unknown):
        assert answer.status == 200
        assert answer.headers["x-rawsse-replay-gap"] == "1"
        assert answer.headers["x-rawsse-replay-from"] == str(first_kept)
        assert answer.events == events[-5:]
        assert int_ids(answer.events) == list(range(first_kept, total + 1))
    assert kept.headers["x-rawsse-replay-gap"] == "0"
    assert kept.events == events[-2:]


async def test_unknown_stream_is_404_in_openai_shape(anyio_backend: str) -> None:
    async with demo_server() as srv:
        answer = await get(srv, events_path("no-such-stream"), {"last-event-id": "3"})
        prefixed = await get(srv, events_path("chatcmpl-no-such-stream"))
        wrong_method = await post(srv, events_path("x"), {})
    assert answer.status == 404
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert answer.json()["error"]["code"] == "stream_not_found"
    assert prefixed.status == 404
    assert wrong_method.status == 405


async def test_resume_needs_the_key(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        original = await post(srv, COMPLETIONS, openai_body(), bearer())
        stream_id = stream_id_of(original)
        without = await get(srv, events_path(stream_id))
        wrong = await get(srv, events_path(stream_id), bearer("sk-wrong"))
        with_key = await get(srv, events_path(stream_id), bearer())
    assert (without.status, wrong.status) == (401, 401)
    assert without.json()["error"]["code"] == "missing_api_key"
    assert with_key.status == 200 and with_key.body == original.body


async def test_resume_an_anthropic_stream_by_message_id(anyio_backend: str) -> None:
    async with demo_server() as srv:
        original = await post(srv, "/v1/messages", anthropic_body(), anthropic_headers())
        message_id = data_of(original.events)[0]["message"]["id"]
        resumed = await get(srv, events_path(message_id), {"last-event-id": "4"})
    check_anthropic(original.events)
    assert message_id.startswith("msg_")
    assert resumed.status == 200
    assert resumed.events == original.events[4:]
    check_anthropic(original.events[:4] + resumed.events)
    assert anthropic_text(original.events) == USER_TEXT


async def test_resume_with_httpx_sse(anyio_backend: str) -> None:
    async with demo_server() as srv:
        original = await post(srv, COMPLETIONS, openai_body())
        stream_id = stream_id_of(original)
        async with httpx.AsyncClient(base_url=srv.url, timeout=10.0, verify=TLS_CONTEXT) as client:
            async with aconnect_sse(
                client, "GET", events_path(stream_id), headers={"Last-Event-ID": "1"}
            ) as source:
                assert source.response.headers["x-rawsse-replay-from"] == "2"
                received: list[Any] = [(sse.id, sse.data) async for sse in source.aiter_sse()]
    assert received == [(e.id, e.data) for e in original.events[1:]]
    assert received[-1] == (last_id(original.events), "[DONE]")


async def _read_stream_id(srv: ChatServer) -> str:
    original = await post(srv, COMPLETIONS, openai_body())
    return stream_id_of(original)


async def test_finished_streams_expire(anyio_backend: str) -> None:
    store = store_in_use(MemoryReplayStore(keep_after_end_s=0.1))
    async with chat_server(replay_store=store) as srv:
        stream_id = await _read_stream_id(srv)
        assert (await get(srv, events_path(stream_id))).status == 200
        await anyio.sleep(0.2)
        expired = await get(srv, events_path(stream_id))
    assert expired.status == 404


async def test_mount_uses_the_replay_store_it_is_given(anyio_backend: str) -> None:
    store = MemoryReplayStore(max_events_per_stream=5)
    async with chat_server(replay_store=store) as srv:
        original = await post(srv, COMPLETIONS, openai_body())
    assert srv.service is not None
    assert srv.service.store is store
    assert await store.exists(stream_id_of(original))


async def test_resume_heartbeats_do_not_reach_the_client_as_events(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EventStream, "default_heartbeat_s", 0.05)
    probe = ProbeModel(tokens=6, delay_s=0, gate_after=3)
    async with chat_server({"probe": probe}) as srv:
        async with open_stream(srv, COMPLETIONS, body=openai_body("probe")) as first:
            await first.read_events(4)
            stream_id = stream_id_of(first)

            async def open_gate_later() -> None:
                await anyio.sleep(0.3)  # several heartbeats on the resumed stream first
                probe.gate.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(open_gate_later)
                async with httpx.AsyncClient(
                    base_url=srv.url, timeout=10.0, verify=TLS_CONTEXT
                ) as client:
                    async with aconnect_sse(
                        client, "GET", events_path(stream_id), headers={"Last-Event-ID": "2"}
                    ) as source:
                        received = [sse.data async for sse in source.aiter_sse()]
            await first.read_to_end()
    assert "" not in received, received
    assert received[-1] == "[DONE]"
