"""``rawsse trace`` as a newcomer runs it: a subprocess against real servers on 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.abc
import pytest

from rawsse.trace._format import escape_bytes
from tests.tools_support import (
    DONE_FRAME,
    LAST_CHUNK,
    REPO_ROOT,
    RawRequest,
    chat_chunk,
    chunk,
    closed_port,
    raw_server,
    rawsse_command,
    rawsse_server,
    run_rawsse,
    sse_head,
)

pytestmark = pytest.mark.anyio

GAP_S = 0.05


def _records(stdout: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def _unescape(text: str) -> bytes:
    out = bytearray()
    for match in re.finditer(r"\\x([0-9a-f]{2})|\\(.)|(.)", text, re.S):
        hex_byte, escaped, plain = match.groups()
        if hex_byte:
            out.append(int(hex_byte, 16))
        elif escaped:
            out += {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}[escaped]
        else:
            out += plain.encode("latin-1")
    return bytes(out)


def test_escape_bytes_is_lossless() -> None:
    data = bytes(range(256)) + b"\\r\r\n"
    assert _unescape(escape_bytes(data)) == data


async def _paced_stream(request: RawRequest, s: anyio.abc.SocketStream) -> None:
    await s.send(sse_head())
    await s.send(chunk(b"retry: 2500\nid: 1\nevent: greeting\ndata: hello\ndata: world\n\n"))
    await anyio.sleep(GAP_S)
    # one event split over two chunks, sent in one write
    await s.send(chunk(b"id: 2\ndata: sp") + chunk(b"lit\n\n"))
    await anyio.sleep(GAP_S)
    await s.send(chunk(b": keep-alive\n\ndata: last\n\n") + LAST_CHUNK)


async def test_json_records_show_reads_framing_events_and_summary(anyio_backend: str) -> None:
    async with raw_server(_paced_stream) as server:
        done = await run_rawsse(
            "trace", server.url(), "--json", "--raw", "--backend", anyio_backend
        )
    assert done.returncode == 0, done.stderr
    records = _records(done.stdout)
    types = [r["type"] for r in records]
    assert types[0] == "request"
    assert types[-1] == "summary"
    assert types.index("head") > types.index("read")
    # every record's offset is at or after the previous one
    offsets = [r["t_ms"] for r in records if "t_ms" in r]
    assert offsets == sorted(offsets)
    # the reads, unescaped, are exactly the bytes the server sent
    received = b"".join(_unescape(r["data"]) for r in records if r["type"] == "read")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"data: last\n\n\r\n" + LAST_CHUNK)
    assert sum(r["bytes"] for r in records if r["type"] == "read") == len(received)
    # chunk-size lines as sent, and h11-style markers
    lines = [r["line"] for r in records if r["type"] == "chunk_header"]
    assert lines == ["3b\\r\\n", "e\\r\\n", "5\\r\\n", "1a\\r\\n", "0\\r\\n"]
    pieces = [r for r in records if r["type"] == "chunk_data"]
    assert all(p["chunk_start"] and p["chunk_end"] for p in pieces)
    events = [r for r in records if r["type"] == "event"]
    assert [(e["event"], e["id"], e["retry"], e["data"]) for e in events] == [
        ("greeting", "1", 2500, "hello\nworld"),
        ("message", "2", None, "split"),
        ("message", None, None, "last"),
    ]
    # the split event is shown right after the chunk that completed it
    second = records.index(events[1])
    assert records[second - 1]["type"] == "chunk_data"
    assert records[second - 2]["line"] == "5\\r\\n"
    summary = records[-1]
    assert summary["status"] == 200
    assert summary["events"] == 3
    assert summary["end"] == "body end"
    assert 0 < summary["headers_ms"] <= summary["first_event_ms"]
    assert summary["gaps_ms"]["min"] >= GAP_S * 1000 * 0.8
    assert summary["chunks"] == 4
    assert summary["wire_bytes"] == len(received)
    head_end = received.index(b"\r\n\r\n") + 4
    assert summary["head_bytes"] == head_end
    payload = sum(p["size"] for p in pieces)
    assert summary["payload_bytes"] == payload
    assert summary["framing_bytes"] == len(received) - head_end - payload
    assert summary["data_bytes"] == len("hello\nworld") + len("split") + len("last")


async def test_text_output_for_people(anyio_backend: str) -> None:
    async with raw_server(_paced_stream) as server:
        done = await run_rawsse("trace", server.url(), "--raw", "--backend", anyio_backend)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert "> GET /events HTTP/1.1" in text
    assert "< HTTP/1.1 200 OK" in text
    assert "chunk: size line 3b\\r\\n = 59 B" in text
    assert "last chunk: size line 0\\r\\n" in text
    assert "event #1" in text
    assert "event=greeting id=1 retry=2500  data=hello\\nworld" in text
    assert "  | HTTP/1.1 200 OK\\r\\n" in text  # --raw: escaped, one line per LF
    assert re.search(r"read #1  \+\d+\.\d{3} ms  \d+ B", text)
    assert "time to first event" in text
    assert "ended                body end" in text


async def test_chat_request_headers_and_method(anyio_backend: str) -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head() + chunk(chat_chunk("hi")) + chunk(DONE_FRAME) + LAST_CHUNK)

    async with raw_server(handler) as server:
        base = f"http://127.0.0.1:{server.port}"
        first = await run_rawsse(
            "trace", base, "--chat", "Hello", "-H", "Authorization: Bearer k", "--json",
            "--backend", anyio_backend,
        )  # fmt: skip
        second = await run_rawsse(
            "trace", base + "/v1/x", "-X", "PUT", "--data", '{"a": [1]}', "--json",
            "--backend", anyio_backend,
        )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    chat, other = server.requests
    assert (chat.method, chat.path) == ("POST", "/v1/chat/completions")
    assert chat.json() == {
        "model": "echo",
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": True,
    }
    assert chat.headers["authorization"] == "Bearer k"
    assert chat.headers["content-type"] == "application/json"
    assert (other.method, other.path, other.body) == ("PUT", "/v1/x", b'{"a":[1]}')


async def test_validate_openai(anyio_backend: str) -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        first = (
            b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},'
            b'"finish_reason":null}]}\n\n'
        )
        last = (
            b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        )
        body = chunk(first) + chunk(last)
        if request.index == 0:
            body += chunk(DONE_FRAME)
        await s.send(sse_head() + body + LAST_CHUNK)

    async with raw_server(handler) as server:
        args = ("--validate", "openai", "--json", "--backend", anyio_backend)
        valid = await run_rawsse("trace", server.url(), *args)
        invalid = await run_rawsse("trace", server.url(), *args)
    assert valid.returncode == 0, valid.stdout
    assert not [r for r in _records(valid.stdout) if r["type"] == "invalid"]
    assert invalid.returncode == 1
    problems = [r["message"] for r in _records(invalid.stdout) if r["type"] == "invalid"]
    assert len(problems) == 1
    assert "[DONE]" in problems[0]


async def test_error_body_is_shown_not_raised(anyio_backend: str) -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        body = b'{"error": {"message": "bad key"}}'
        await s.send(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    async with raw_server(handler) as server:
        done = await run_rawsse("trace", server.url(), "--backend", anyio_backend)
    assert done.returncode == 0
    text = done.stdout.decode()
    assert "< HTTP/1.1 401 Unauthorized" in text
    assert "body  +" in text and '"bad key"' in text


async def test_connection_refused_timeout_and_max_events(anyio_backend: str) -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head())
        for n in range(100):
            await s.send(chunk(b"data: %d\n\n" % n))
            await anyio.sleep(0.01)

    refused = await run_rawsse(
        "trace", f"http://127.0.0.1:{closed_port()}/", "--json", "--backend", anyio_backend
    )
    assert refused.returncode == 1
    records = _records(refused.stdout)
    assert records[-2]["type"] == "error"
    assert "cannot connect" in records[-2]["message"]
    async with raw_server(handler) as server:
        timed_out = await run_rawsse(
            "trace", server.url(), "--timeout", "0.3", "--json", "--backend", anyio_backend
        )
        stopped = await run_rawsse(
            "trace", server.url(), "--max-events", "3", "--json", "--backend", anyio_backend
        )
    assert timed_out.returncode == 1
    assert _records(timed_out.stdout)[-1]["end"] == "timed out after 0.3 s"
    assert stopped.returncode == 0
    records = _records(stopped.stdout)
    assert [r["data"] for r in records if r["type"] == "event"] == ["0", "1", "2"]
    assert records[-1]["end"] == "stopped after 3 events"


async def test_bad_command_line() -> None:
    done = await run_rawsse("trace", "http://127.0.0.1:1/", "-H", "no colon")
    assert done.returncode == 2
    assert b"Name: value" in done.stderr


# ---------------------------------------------------------------- against `rawsse serve`


@pytest.fixture(scope="module")
def rawsse_url() -> Iterator[str]:
    with rawsse_server("--token-delay", "0.02") as url:
        yield url


async def test_trace_rawsse_chat_openai_and_anthropic(rawsse_url: str, anyio_backend: str) -> None:
    openai = await run_rawsse(
        "trace", rawsse_url, "--chat", "hello big world", "--validate", "openai", "--json",
        "--backend", anyio_backend,
    )  # fmt: skip
    anthropic = await run_rawsse(
        "trace", rawsse_url + "/v1/messages", "--chat", "hi", "--validate", "anthropic",
        "--json", "--backend", anyio_backend,
    )  # fmt: skip
    assert openai.returncode == 0, openai.stdout
    records = _records(openai.stdout)
    assert not [r for r in records if r["type"] in ("invalid", "error")]
    head = next(r for r in records if r["type"] == "head")
    assert head["status"] == 200
    events = [r for r in records if r["type"] == "event"]
    assert events[-1]["data"] == "[DONE]"
    assert [e["id"] for e in events] == [str(n) for n in range(1, len(events) + 1)]
    text = "".join(
        json.loads(e["data"])["choices"][0]["delta"].get("content", "") for e in events[:-1]
    )
    assert text == "hello big world"
    summary = records[-1]
    # three tokens, the first at once and then one per 20 ms: the gaps show the pace
    assert summary["gaps_ms"]["max"] >= 15
    assert summary["total_ms"] >= 35
    assert summary["chunks"] >= 3
    assert anthropic.returncode == 0, anthropic.stdout
    types = [r["event"] for r in _records(anthropic.stdout) if r["type"] == "event"]
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"


async def test_trace_chat_speaks_geminis_request_format(
    rawsse_url: str, anyio_backend: str
) -> None:
    gemini = await run_rawsse(
        "trace", rawsse_url + "/v1beta/models/echo:streamGenerateContent?alt=sse",
        "--chat", "hello big world", "--json", "--backend", anyio_backend,
    )  # fmt: skip
    assert gemini.returncode == 0, gemini.stdout
    records = _records(gemini.stdout)
    assert next(r for r in records if r["type"] == "head")["status"] == 200
    texts = [
        part.get("text", "")
        for r in records
        if r["type"] == "event"
        for part in json.loads(r["data"])["candidates"][0]["content"]["parts"]
    ]
    assert "".join(texts) == "hello big world"


async def test_ctrl_c_still_prints_the_summary(anyio_backend: str) -> None:
    async def endless(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head())
        for n in range(1000):
            await s.send(chunk(b"data: %d\n\n" % n))
            await anyio.sleep(0.05)

    async with raw_server(endless) as server:
        command = rawsse_command("trace", server.url(), "--json", "--backend", anyio_backend)
        async with await anyio.open_process(command, cwd=REPO_ROOT) as process:
            assert process.stdout is not None
            stdout = b""
            # Interrupt once three events are shown (however long the start took).
            with anyio.fail_after(30):
                while stdout.count(b'"type": "event"') + stdout.count(b'"type":"event"') < 3:
                    stdout += await process.stdout.receive()
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(10):
                await process.wait()
            stdout += b"".join([piece async for piece in process.stdout])
    assert process.returncode == 130
    records = _records(stdout)
    assert records[-1]["type"] == "summary"
    assert records[-1]["end"] == "interrupted (Ctrl-C)"
    assert records[-1]["events"] >= 3
