"""Helpers for the chat end-to-end tests: a real server, the vendors' SDKs, raw streams.

- ``demo_server`` serves ``create_demo_app`` (what ``rawsse serve`` serves) and ``chat_server``
  a ``mount_chat`` App with chosen models and options, both on 127.0.0.1:0 in this event loop.
- ``openai_client``, ``anthropic_client`` and ``gemini_client`` are the vendors' *sync* clients
  pointed at it, with a ``Recorder`` transport that keeps every response's bytes, so a stream
  the SDK read can also go through the grammar validators. Run them with ``in_thread`` (the
  server keeps running on this loop, asyncio or trio, while the SDK blocks in a worker thread).
- ``served_app`` runs ``rawsse serve`` in a subprocess (for signals and command-line options).
- ``post`` / ``get`` read one whole response with httpx (anyio-based, so on both backends);
  ``open_stream`` reads a stream partway and leaves (a client disconnect).
- ``ProbeModel`` is a backend that records its life: started, tokens yielded, ``finally`` run.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anthropic
import anyio
import anyio.abc
import httpx
import httpx2
import openai
from google import genai
from google.genai import types as genai_types

from rawsse.app import App
from rawsse.chat import ChatRequest, check_anthropic_stream, check_openai_stream, demo_models
from rawsse.chat.deltas import Delta, ModelBackend
from rawsse.chat.mount import ChatService, mount_chat
from rawsse.cli._demo_app import DemoOptions, create_demo_app
from rawsse.metrics import METRICS
from rawsse.parser import EventParser
from rawsse.replay import ReplayStore
from rawsse.server import Server
from rawsse.sse import Event
from tests.support import running_server

TIMEOUT_S = 10.0
KEY = "sk-rawsse-test"
ANTHROPIC_VERSION = "2023-06-01"
USER_TEXT = "Hello  there,\n\twörld 👋 of  SSE "
"""An echo prompt with runs of spaces, a tab, a newline and non-ASCII: echo must keep it all."""

T = TypeVar("T")

# One TLS context for every client the tests make (never used on plain http, but building a
# context per client costs ~50 ms: most of a test's time).
TLS_CONTEXT = ssl.create_default_context()


# -- servers -------------------------------------------------------------------------------


@dataclass
class ChatServer:
    """A running chat server: where it listens, and its ``ChatService`` when we mounted it."""

    server: Server
    service: ChatService | None = None
    http_clients: list[Any] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def http_client(self, recorder: Recorder | None, lib: Any = httpx) -> Any:
        """A ``lib.Client`` (httpx or httpx2) through ``recorder``, closed with the server."""
        client = (recorder or Recorder()).client(lib)
        self.http_clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self.http_clients:
            client.close()


@asynccontextmanager
async def demo_server(
    *,
    api_keys: tuple[str, ...] = (),
    token_delay_s: float = 0.0,
    resume_grace_s: float = 0.0,
    **limits: Any,
) -> AsyncIterator[ChatServer]:
    """Serve the demo app, as ``rawsse serve`` builds it, for the block."""
    app = create_demo_app(
        DemoOptions(api_keys=api_keys, token_delay_s=token_delay_s, resume_grace_s=resume_grace_s)
    )
    async with running_server(app, **limits) as server:
        srv = ChatServer(server)
        try:
            yield srv
        finally:
            await in_thread(srv.close_clients)


@asynccontextmanager
async def chat_server(
    models: Mapping[str, ModelBackend] | None = None,
    *,
    api_keys: tuple[str, ...] = (),
    replay_store: ReplayStore | None = None,
    resume_grace_s: float = 0.0,
    status_commit_s: float | None = None,
    token_delay_s: float = 0.0,
    **limits: Any,
) -> AsyncIterator[ChatServer]:
    """Serve ``mount_chat`` on ``models`` (default: the demo models) with these options."""
    app = App()
    service = mount_chat(
        app,
        demo_models(token_delay_s) if models is None else models,
        api_keys=api_keys,
        replay_store=replay_store,
        resume_grace_s=resume_grace_s,
        status_commit_s=status_commit_s,
    )
    async with running_server(app, **limits) as server:
        srv = ChatServer(server, service)
        try:
            yield srv
        finally:
            await in_thread(srv.close_clients)


@dataclass
class ServedApp:
    """``rawsse serve`` running in a subprocess: its port, its process, HTTP clients for SDKs."""

    port: int
    proc: subprocess.Popen[str]
    http_clients: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http_client(self, recorder: Recorder | None, lib: Any = httpx) -> Any:
        """A ``lib.Client`` (httpx or httpx2) through ``recorder``, closed with the server."""
        client = (recorder or Recorder()).client(lib)
        self.http_clients.append(client)
        return client

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = TIMEOUT_S) -> int:
        """Send ``sig`` and wait for the process to exit; returns its exit status."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)


@contextmanager
def served_app(*args: str) -> Iterator[ServedApp]:
    """``python -m rawsse serve --port 0 ARGS`` in a subprocess, for the block."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rawsse", "serve", "--port", "0", "--no-access-log", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    served = ServedApp(0, proc)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("rawsse listening on http://"), line
        served.port = int(line.strip().rsplit(":", 1)[1])
        yield served
    finally:
        for client in served.http_clients:
            client.close()
        proc.kill()
        proc.wait(timeout=TIMEOUT_S)
        assert proc.stdout is not None
        proc.stdout.close()


async def in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking SDK call in a worker thread while the server runs on this loop."""
    return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))


# -- recording what the SDKs received --------------------------------------------------------


def parse_events(data: bytes) -> list[Event]:
    """The SSE events in a whole response body; the body must end on a frame boundary."""
    parser = EventParser()
    events = parser.feed(data)
    assert not parser.close(), f"the stream ended inside an event: {data[-200:]!r}"
    return events


@dataclass
class Exchange:
    """One request an SDK made and the response bytes it read (as far as it read them)."""

    method: str
    path: str
    query: str
    request_headers: httpx.Headers
    status: int
    headers: httpx.Headers
    body: bytearray = field(default_factory=bytearray)

    @property
    def events(self) -> list[Event]:
        return parse_events(bytes(self.body))

    def json(self) -> Any:
        return json.loads(self.body)


def _tee_type(lib: Any) -> Any:
    """A ``SyncByteStream`` of ``lib`` (httpx or httpx2) copying chunks into an exchange."""

    class Tee(lib.SyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, exchange: Exchange) -> None:
            self.inner = inner
            self.exchange = exchange

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self.inner:
                self.exchange.body += chunk
                yield chunk

        def close(self) -> None:
            self.inner.close()

    return Tee


_TEE_TYPES = {lib.__name__: _tee_type(lib) for lib in (httpx, httpx2)}


class Recorder:
    """An httpx (or httpx2) transport that keeps each response's bytes as the client reads
    them. ``strip_headers`` are removed from every request: a client that sends no key at all
    (the SDKs refuse to be built without one)."""

    def __init__(self, strip_headers: tuple[str, ...] = ()) -> None:
        self.strip_headers = strip_headers
        self.exchanges: list[Exchange] = []
        self.lib: Any = httpx
        self.inner: Any = None

    def client(self, lib: Any) -> Any:
        """A ``lib.Client`` sending through this recorder."""
        self.lib = lib
        self.inner = lib.HTTPTransport(verify=TLS_CONTEXT)
        return lib.Client(transport=self)

    @property
    def last(self) -> Exchange:
        assert self.exchanges, "no request was made"
        return self.exchanges[-1]

    def handle_request(self, request: Any) -> Any:
        for name in self.strip_headers:
            request.headers.pop(name, None)
        response = self.inner.handle_request(request)
        exchange = Exchange(
            request.method,
            request.url.path,
            request.url.query.decode(),
            httpx.Headers(list(request.headers.items())),
            response.status_code,
            httpx.Headers(list(response.headers.items())),
        )
        self.exchanges.append(exchange)
        return self.lib.Response(
            response.status_code,
            headers=response.headers,
            stream=_TEE_TYPES[self.lib.__name__](response.stream, exchange),
            extensions=response.extensions,
            request=request,
        )

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def openai_client(
    srv: ChatServer | ServedApp, recorder: Recorder | None = None, *, api_key: str = KEY
) -> openai.OpenAI:
    """The openai SDK's sync client on ``srv`` (no retries: every answer is seen as sent)."""
    return openai.OpenAI(
        base_url=f"{srv.url}/v1",
        api_key=api_key,
        max_retries=0,
        timeout=TIMEOUT_S,
        http_client=srv.http_client(recorder, httpx2),  # the SDK's own HTTP library
    )


def anthropic_client(
    srv: ChatServer | ServedApp, recorder: Recorder | None = None, *, api_key: str = KEY
) -> anthropic.Anthropic:
    """The anthropic SDK's sync client on ``srv``."""
    return anthropic.Anthropic(
        base_url=srv.url,
        api_key=api_key,
        max_retries=0,
        timeout=TIMEOUT_S,
        http_client=srv.http_client(recorder, httpx2),  # this anthropic release uses httpx2
    )


def gemini_client(
    srv: ChatServer | ServedApp,
    recorder: Recorder | None = None,
    *,
    api_key: str = KEY,
    api_version: str = "v1beta",
) -> genai.Client:
    """google-genai's client on ``srv`` (its sync methods; ``/{api_version}/models/...``)."""
    return genai.Client(
        api_key=api_key,
        http_options=genai_types.HttpOptions(
            base_url=srv.url,
            api_version=api_version,
            timeout=int(TIMEOUT_S * 1000),
            httpx_client=srv.http_client(recorder),
        ),
    )


# -- raw HTTP --------------------------------------------------------------------------------


@dataclass
class RawAnswer:
    """A whole response read with httpx: status, headers, body bytes and SSE events."""

    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def events(self) -> list[Event]:
        return parse_events(self.body)

    def json(self) -> Any:
        return json.loads(self.body)


async def request(
    srv: ChatServer | ServedApp,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = TIMEOUT_S,
) -> RawAnswer:
    """Send one request with httpx and read the whole response."""
    async with httpx.AsyncClient(base_url=srv.url, timeout=timeout_s, verify=TLS_CONTEXT) as client:
        async with client.stream(
            method, path, json=json_body, content=content, headers=headers
        ) as response:
            body = b"".join([chunk async for chunk in response.aiter_raw()])
            return RawAnswer(response.status_code, response.headers, body)


async def post(
    srv: ChatServer | ServedApp, path: str, body: Any, headers: Mapping[str, str] | None = None
) -> RawAnswer:
    """POST a JSON body and read the whole answer."""
    return await request(srv, "POST", path, json_body=body, headers=headers)


async def get(
    srv: ChatServer | ServedApp, path: str, headers: Mapping[str, str] | None = None
) -> RawAnswer:
    """GET and read the whole answer."""
    return await request(srv, "GET", path, headers=headers)


class PartialStream:
    """A stream read over a raw socket, as far as the test wants; leaving ``open_stream``
    closes the socket (a client disconnect). Decodes the chunked body as it arrives."""

    def __init__(self, sock: anyio.abc.SocketStream) -> None:
        self.sock = sock
        self.status = 0
        self.headers = httpx.Headers()
        self.raw = b""  # the de-chunked body so far
        self.events: list[Event] = []
        self.ended = False  # the chunked terminator arrived
        self._buffer = b""
        self._parser = EventParser()

    async def _receive(self) -> bool:
        try:
            data = await self.sock.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return False
        self._buffer += data
        return True

    async def read_head(self) -> None:
        with anyio.fail_after(TIMEOUT_S):
            while b"\r\n\r\n" not in self._buffer:
                if not await self._receive():
                    raise AssertionError(f"closed before the response head: {self._buffer!r}")
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = httpx.Headers([tuple(line.split(": ", 1)) for line in lines[1:]])
        assert self.headers.get("transfer-encoding") == "chunked", head
        self._dechunk()

    def _dechunk(self) -> None:
        body = b""
        while not self.ended:
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self._buffer[:line_end].split(b";")[0], 16)
            if size == 0:
                if len(self._buffer) >= line_end + 4:
                    assert self._buffer[line_end + 2 : line_end + 4] == b"\r\n"
                    self.ended = True
                    self._buffer = self._buffer[line_end + 4 :]
                break
            end = line_end + 2 + size
            if len(self._buffer) < end + 2:
                break
            assert self._buffer[end : end + 2] == b"\r\n", "chunk not followed by CRLF"
            body += self._buffer[line_end + 2 : end]
            self._buffer = self._buffer[end + 2 :]
        if body:
            self.raw += body
            self.events += self._parser.feed(body)

    async def read_until(
        self, done: Callable[[list[Event]], bool], timeout_s: float = TIMEOUT_S
    ) -> list[Event]:
        """Read until ``done(events)`` holds; return the events so far."""
        with anyio.fail_after(timeout_s):
            while not done(self.events):
                if self.ended or not await self._receive():
                    raise AssertionError(f"the stream ended first: {self.events}")
                self._dechunk()
        return self.events

    async def read_events(self, count: int, timeout_s: float = TIMEOUT_S) -> list[Event]:
        """Read until at least ``count`` events arrived."""
        return await self.read_until(lambda events: len(events) >= count, timeout_s)

    async def read_to_end(self, timeout_s: float = TIMEOUT_S) -> list[Event]:
        """Read until the chunked terminator; the body must end on a frame boundary."""
        with anyio.fail_after(timeout_s):
            while not self.ended:
                assert await self._receive(), "the connection closed before the terminator"
                self._dechunk()
        assert not self._parser.close(), "the stream ended inside an event"
        return self.events


def raw_request(
    method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
) -> bytes:
    """An HTTP/1.1 request's bytes, with ``Connection: close`` and a JSON body if given."""
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@asynccontextmanager
async def open_stream(
    srv: ChatServer,
    path: str,
    *,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
) -> AsyncIterator[PartialStream]:
    """Send a streaming request on a raw socket and read its head; the block's end closes it."""
    sock = await anyio.connect_tcp("127.0.0.1", srv.port)
    try:
        await sock.send(raw_request(method, path, body, headers))
        stream = PartialStream(sock)
        await stream.read_head()
        yield stream
    finally:
        await sock.aclose()


# -- request bodies and reading frames ---------------------------------------------------------


def openai_body(model: str = "echo", text: str = USER_TEXT, **fields: Any) -> dict[str, Any]:
    """A streaming Chat Completions body (``stream`` true unless ``fields`` says otherwise)."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        **fields,
    }


def anthropic_body(model: str = "echo", text: str = USER_TEXT, **fields: Any) -> dict[str, Any]:
    """A streaming Messages body."""
    return {
        "model": model,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        **fields,
    }


def anthropic_headers(key: str | None = None) -> dict[str, str]:
    """The headers the anthropic SDK sends (``x-api-key`` only when ``key`` is given)."""
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    if key is not None:
        headers["x-api-key"] = key
    return headers


def bearer(key: str = KEY) -> dict[str, str]:
    """An ``Authorization: Bearer`` header."""
    return {"authorization": f"Bearer {key}"}


def check_openai(events: list[Event]) -> None:
    """The OpenAI grammar, with rawsse's ``id:`` numbering."""
    check_openai_stream(events, require_ids=True)


def check_anthropic(events: list[Event]) -> None:
    """The Anthropic grammar, with rawsse's ``id:`` numbering (heartbeat pings carry none)."""
    numbered = [e for e in events if not (e.event == "ping" and e.id is None)]
    check_anthropic_stream(numbered, require_ids=True)
    check_anthropic_stream(events)


def data_of(events: list[Event]) -> list[Any]:
    """Each event's data as JSON, or as text (``[DONE]``)."""
    out = []
    for event in events:
        try:
            out.append(json.loads(event.data))
        except ValueError:
            out.append(event.data)
    return out


def openai_text(events: list[Event], choice: int = 0, key: str = "content") -> str:
    """The concatenated ``delta[key]`` of one choice."""
    return "".join(
        c["delta"].get(key) or ""
        for chunk in data_of(events)
        if isinstance(chunk, dict)
        for c in chunk.get("choices") or []
        if c["index"] == choice
    )


def anthropic_text(events: list[Event]) -> str:
    """The concatenated ``text_delta`` texts."""
    return "".join(
        d["delta"]["text"]
        for d in data_of(events)
        if d.get("type") == "content_block_delta" and d["delta"]["type"] == "text_delta"
    )


def stream_id_of(answer: RawAnswer | PartialStream) -> str:
    """The ``x-rawsse-stream-id`` response header."""
    value = answer.headers.get("x-rawsse-stream-id")
    assert value, f"no x-rawsse-stream-id header: {answer.headers}"
    return value


def int_ids(events: list[Event]) -> list[int]:
    """The numeric ``id:`` of every event that has one."""
    return [int(e.id) for e in events if e.id is not None]


async def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` every 10 ms until it holds (fails after ``timeout_s``)."""
    with anyio.fail_after(timeout_s):
        while not condition():
            await anyio.sleep(0.01)


async def wait_streams_idle(baseline_active: int = 0, timeout_s: float = 5.0) -> None:
    """Wait until ``METRICS.streams_active`` is back to ``baseline_active``."""
    await wait_for(lambda: baseline_active == METRICS.streams_active, timeout_s)


# -- a backend that records its life ---------------------------------------------------------


class ProbeModel:
    """A model backend that yields ``t0 t1 ...`` and records what happened to its generator.

    ``started`` is set on its first step, ``closed`` in its ``finally`` (normal end,
    cancellation or ``aclose``), ``completed`` when it yielded all ``tokens``. With
    ``gate_after``, it waits before that token until the test sets ``gate``. ``fail_at``
    raises ``fail_with`` before that token.
    """

    def __init__(
        self,
        tokens: int = 1000,
        delay_s: float = 0.01,
        *,
        gate_after: int | None = None,
        fail_at: int | None = None,
        fail_with: BaseException | None = None,
        first_delay_s: float = 0.0,
    ) -> None:
        self.tokens = tokens
        self.delay_s = delay_s
        self.gate_after = gate_after
        self.fail_at = fail_at
        self.fail_with = fail_with or RuntimeError("probe failure")
        self.first_delay_s = first_delay_s
        self.started = anyio.Event()
        self.closed = anyio.Event()
        self.gate = anyio.Event()
        self.yielded = 0
        self.completed = False
        self.calls = 0

    def __call__(self, request: ChatRequest) -> AsyncIterator[str | Delta]:
        self.calls += 1
        return self._generate()

    async def _generate(self) -> AsyncIterator[str | Delta]:
        self.started.set()
        try:
            if self.first_delay_s:
                await anyio.sleep(self.first_delay_s)
            for i in range(self.tokens):
                if i == self.fail_at:
                    raise self.fail_with
                if i == self.gate_after:
                    await self.gate.wait()
                elif i and self.delay_s:
                    await anyio.sleep(self.delay_s)
                yield f"t{i} "
                self.yielded += 1
            self.completed = True
        finally:
            self.closed.set()


def echo_tokens(text: str) -> list[str]:
    """The tokens ``echo`` answers ``text`` with, per its contract: one per word, each word
    with the whitespace after it, leading whitespace a token of its own."""
    tokens = re.findall(r"\S+\s*|\s+", text)
    assert "".join(tokens) == text
    return tokens
