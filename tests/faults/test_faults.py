"""Fault injection: what the network and a model backend can do, and what is left afterwards.

Every fault runs against a real server on 127.0.0.1 (in-process on asyncio and on trio, or a
``rawsse serve`` subprocess), with a *witness* stream open beside it. After each one:

- the server's state is back where it was: ``server.stats.connections_active``,
  ``METRICS.streams_active``, the reactor's watched sockets, the number of tasks, and the open file
  descriptors (``/proc/self/fd``; ``/proc/PID/fd`` and ``/metrics`` for a subprocess), with every
  producer's ``finally`` run;
- the witness stream kept flowing, in order, with no event lost, and still ends cleanly.

The faults: RST and FIN at every stage of an exchange (during the header section, during the
body, before the first event, mid-stream, during a heartbeat, during a replay on the chat resume
route, while following a live stream there); a peer that stops reading (zero window: evicted
after the send timeout, the producer held by backpressure meanwhile); a peer that half-closes;
a thousand connections opened and dropped at once; the connection limit reached and recovered
from; file descriptors exhausted (EMFILE, in a subprocess with a low RLIMIT_NOFILE, also at the
very moment the server starts); model backends that raise (when called, before the first
token, mid-stream), hang, or yield garbage; and load that must not grow costs: three rounds of
500 streams dropped at once (memory stops growing), the replay store at its byte budget (an
append costs the same with 50 streams or 3,000), one huge unpaced answer (other clients are
still answered at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from rawsse.app import App
from rawsse.chat import ChatRequest, check_openai_stream, demo_models, mount_chat
from rawsse.metrics import METRICS
from rawsse.parser import EventParser
from rawsse.request import Request
from rawsse.response import Response
from rawsse.server import Server
from rawsse.stream import EventStream
from tests.support import (
    RawClient,
    blocking_socket,
    get,
    parse_responses,
    recv_some,
    reset_close,
    running_server,
    wait_for,
    wait_for_sync,
)

pytestmark = pytest.mark.anyio

SETTLE_S = 10.0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Generous bounds: the suite must pass on a loaded two-core machine, yet catch a stuck server.
IO_WAIT_S = 10.0
# The most a socket's send buffer grows to (net.ipv4.tcp_wmem's maximum).
with open("/proc/sys/net/ipv4/tcp_wmem") as _wmem:
    TCP_WMEM_MAX = int(_wmem.read().split()[2])


# --- the application under test -----------------------------------------------------------


class Probe:
    """What the producers did, per tag: started, finished (their ``finally`` ran), sent."""

    def __init__(self) -> None:
        self.started: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.uploads = 0
        self.backend_cleanups = 0

    def balanced(self, tag: str) -> bool:
        return self.started[tag] == self.finished[tag]


def fault_app(probe: Probe, *, resume_grace_s: float = 0.0) -> App:
    app = App()

    async def ping(request: Request) -> Response:
        return Response("pong")

    async def upload(request: Request) -> Response:
        probe.uploads += 1
        return Response(str(len(request.body)))

    async def sse(request: Request) -> EventStream:
        """Paced events: ``n`` of them, ``delay`` s apart, the first after ``first`` s,
        ``size`` bytes of padding each, heartbeats every ``hb`` s (0 = off)."""
        q = request.query
        tag = q.get("tag", "fault")
        count = int(q.get("n", "1000000"))
        delay = float(q.get("delay", "0.01"))
        first = float(q.get("first", "0"))
        pad = "x" * int(q.get("size", "0"))

        async def produce(stream: EventStream) -> None:
            probe.started[tag] += 1
            try:
                if first:
                    await anyio.sleep(first)
                for i in range(count):
                    await stream.send({"i": i, "pad": pad})
                    probe.sent[tag] += 1
                    if delay:
                        await anyio.sleep(delay)
            finally:
                probe.finished[tag] += 1

        return EventStream(produce, heartbeat_s=float(q.get("hb", "0")))

    app.add_route("/ping", ping, ("GET",))
    app.add_route("/upload", upload, ("POST",))
    app.add_route("/sse", sse, ("GET",))
    mount_chat(
        app,
        {**demo_models(token_delay_s=0.0), **fault_models(probe)},
        resume_grace_s=resume_grace_s,
    )
    return app


class _Opaque:
    def __repr__(self) -> str:
        return "<Opaque secret-internal-detail>"


GARBAGE: dict[str, Any] = {
    "int": 42,
    "none": None,
    "bytes": b"bytes",
    "dict": {"text": "x"},
    "object": _Opaque(),
}


def fault_models(probe: Probe) -> dict[str, Callable[[ChatRequest], Any]]:
    """Model backends that misbehave, by name."""

    def raises_when_called(request: ChatRequest) -> Any:
        raise RuntimeError("backend exploded: secret-internal-detail")

    def raises_after(count: int) -> Callable[[ChatRequest], Any]:
        def backend(request: ChatRequest) -> AsyncIterator[str]:
            async def deltas() -> AsyncIterator[str]:
                try:
                    for i in range(count):
                        yield f"token{i} "
                    raise RuntimeError("backend exploded: secret-internal-detail")
                finally:
                    probe.backend_cleanups += 1

            return deltas()

        return backend

    def hangs(request: ChatRequest) -> AsyncIterator[str]:
        async def deltas() -> AsyncIterator[str]:
            try:
                yield "first "
                await anyio.sleep_forever()
                yield "never"
            finally:
                probe.backend_cleanups += 1

        return deltas()

    def garbage(value: Any) -> Callable[[ChatRequest], Any]:
        def backend(request: ChatRequest) -> AsyncIterator[Any]:
            async def deltas() -> AsyncIterator[Any]:
                try:
                    yield "fine "
                    yield value
                    yield "after"
                finally:
                    probe.backend_cleanups += 1

            return deltas()

        return backend

    def not_iterable(request: ChatRequest) -> Any:
        return 42

    models: dict[str, Callable[[ChatRequest], Any]] = {
        "raises-when-called": raises_when_called,
        "raises-first": raises_after(0),
        "raises-mid": raises_after(3),
        "hangs": hangs,
        "not-iterable": not_iterable,
    }
    models.update({f"garbage-{name}": garbage(value) for name, value in GARBAGE.items()})
    return models


# --- state and the witness ----------------------------------------------------------------


def task_count() -> int:
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        def walk(task: Any) -> int:
            return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

        return walk(trio.lowlevel.current_root_task())
    return len(asyncio.all_tasks())


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass(frozen=True)
class State:
    connections: int
    streams: int
    watched: int
    tasks: int
    fds: int

    def returned_to(self, base: State) -> bool:
        return (
            self.connections == base.connections
            and self.streams == base.streams
            and self.watched == base.watched
            and self.tasks <= base.tasks
            and self.fds <= base.fds
        )


def state(server: Server) -> State:
    return State(
        server.stats.connections_active,
        METRICS.streams_active,
        server.reactor.watched_count,
        task_count(),
        open_fds(),
    )


async def settle(server: Server, base: State, timeout: float = SETTLE_S) -> None:
    """Wait until the server is back to ``base`` (bounded), or fail with the difference."""
    await wait_for(
        lambda: state(server).returned_to(base),
        timeout,
        what=f"the state to return to {base}",
        state=lambda: state(server),
    )


class Witness:
    """A paced stream (50 events/s) read by a task beside the fault."""

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.arrivals: list[float] = []
        self.raw = b""

    async def run(self, port: int, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with RawClient.connect(port) as client:
            await client.send(get("/sse?tag=witness&delay=0.02&hb=0.1", close=False))
            await client.read_until(b"\r\n\r\n")
            task_status.started()
            pending = client.received.partition(b"\r\n\r\n")[2]
            while True:
                data = await client.stream.receive()  # cancelled when the test is done
                pending += data
                now = anyio.current_time()
                *complete, pending = pending.split(b"\n\n")
                for frame in complete:
                    match = re.search(rb'"i":(\d+)', frame)
                    if match:
                        self.indices.append(int(match.group(1)))
                        self.arrivals.append(now)

    async def assert_flowing(self, *, max_gap_s: float = 3.0) -> None:
        """More events arrive, every index once and in order, with no long silence."""
        seen = len(self.indices)
        await wait_for(lambda: len(self.indices) >= seen + 5, IO_WAIT_S, what="witness events")
        assert self.indices == list(range(self.indices[0], self.indices[-1] + 1))
        gaps = [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]
        assert max(gaps, default=0) < max_gap_s, f"witness stalled {max(gaps):.2f} s"


@asynccontextmanager
async def fault_server(
    probe: Probe, *, resume_grace_s: float = 0.0, **limits: Any
) -> AsyncIterator[tuple[Server, Witness]]:
    """A server with a witness stream; on exit, checks the witness and that all producers'
    ``finally`` ran."""
    app = fault_app(probe, resume_grace_s=resume_grace_s)
    async with running_server(app, **limits) as server, anyio.create_task_group() as tg:
        witness = Witness()
        await tg.start(witness.run, server.port)
        # Its first event is there: the server's state is settled for a baseline.
        await wait_for(lambda: witness.indices, IO_WAIT_S, what="the witness's first event")
        yield server, witness
        await witness.assert_flowing()
        tg.cancel_scope.cancel()
    assert probe.balanced("fault"), (probe.started, probe.finished)


async def baseline(server: Server) -> State:
    """The server's state before a fault (the witness is streaming: ``fault_server``)."""
    return state(server)


def close(sock: socket.socket, how: str) -> None:
    if how == "rst":
        reset_close(sock)
    else:
        sock.close()


async def read_until(sock: socket.socket, marker: bytes, count: int = 1) -> bytes:
    data = b""
    with anyio.fail_after(IO_WAIT_S):
        while data.count(marker) < count:
            chunk = await recv_some(sock, IO_WAIT_S)
            assert chunk, f"closed before {marker!r} x{count}: {data[-200:]!r}"
            data += chunk
    return data


CLOSES = pytest.mark.parametrize("how", ["fin", "rst"])


async def wait_waiting_for_input(server: Server, count: int) -> None:
    """Wait until ``count`` connections read what they were sent and wait for more."""
    await wait_for(
        lambda: sum(c._read_deadline is not None for c in server.context.connections) >= count,
        IO_WAIT_S,
        what=f"{count} connections waiting for input",
    )


# --- RST and FIN at every stage -----------------------------------------------------------


@CLOSES
async def test_close_during_header_section(how: str) -> None:
    probe = Probe()
    async with fault_server(probe) as (server, witness):
        base = await baseline(server)
        socks = [blocking_socket(server.port) for _ in range(20)]
        for i, sock in enumerate(socks):
            sock.sendall(b"GET /sse HTTP/1.1\r\nHost: t\r\nX-Partial: " + b"a" * i)
        await wait_waiting_for_input(server, 20)
        for sock in socks:
            close(sock, how)
        await settle(server, base)
        assert probe.started["fault"] == 0
        await witness.assert_flowing()
        await assert_still_serving_here(server.port)


@CLOSES
async def test_close_during_request_body(how: str) -> None:
    probe = Probe()
    async with fault_server(probe) as (server, witness):
        base = await baseline(server)
        socks = []
        for chunked in (False, True):
            sock = blocking_socket(server.port)
            if chunked:
                sock.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"400\r\n" + b"b" * 300
                )
            else:
                sock.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
                    + b"a" * 5000
                )
            socks.append(sock)
        await wait_waiting_for_input(server, 2)
        for sock in socks:
            close(sock, how)
        await settle(server, base)
        assert probe.uploads == 0  # no handler ran on half a body
        await witness.assert_flowing()


@CLOSES
async def test_close_before_first_event(how: str) -> None:
    probe = Probe()
    async with fault_server(probe) as (server, witness):
        base = await baseline(server)
        disconnects = METRICS.client_disconnects_total
        sock = blocking_socket(server.port)
        sock.sendall(get("/sse?first=30"))
        await read_until(sock, b"\r\n\r\n")  # the head is out; the producer waits
        assert probe.started["fault"] == 1 and probe.sent["fault"] == 0
        close(sock, how)
        await settle(server, base)
        assert probe.balanced("fault")
        assert METRICS.client_disconnects_total == disconnects + 1
        await witness.assert_flowing()


@CLOSES
async def test_close_mid_stream(how: str) -> None:
    probe = Probe()
    async with fault_server(probe) as (server, witness):
        base = await baseline(server)
        sock = blocking_socket(server.port)
        sock.sendall(get("/sse?delay=0.002&size=200"))
        await read_until(sock, b'"i":', count=20)
        close(sock, how)
        await settle(server, base)
        assert probe.balanced("fault")  # the producer's finally ran: it sends no more
        await witness.assert_flowing()


async def read_heartbeats(sock: socket.socket, count: int) -> bytes:
    """Read until ``count`` more heartbeats were written (whatever frame a route uses)."""
    target = METRICS.heartbeats_total + count
    data = b""
    with anyio.fail_after(IO_WAIT_S):
        while METRICS.heartbeats_total < target:
            with anyio.move_on_after(0.05):
                data += await recv_some(sock, IO_WAIT_S)
    return data


@CLOSES
async def test_close_during_heartbeat(how: str) -> None:
    probe = Probe()
    async with fault_server(probe) as (server, witness):
        base = await baseline(server)
        sock = blocking_socket(server.port)
        sock.sendall(get("/sse?first=30&hb=0.03"))
        data = await read_heartbeats(sock, 3)
        assert b"data:" not in data  # only heartbeats so far
        close(sock, how)
        await settle(server, base)
        assert probe.balanced("fault") and probe.sent["fault"] == 0
        await witness.assert_flowing()


def chat_request(body: dict[str, Any], path: str = "/v1/chat/completions") -> bytes:
    raw = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(raw)}\r\n\r\n"
    ).encode() + raw


def lorem(tokens: int, **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "lorem",
        "stream": True,
        "max_tokens": tokens,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if options:
        body["rawsse"] = options
    return body


@CLOSES
async def test_close_during_replay(how: str) -> None:
    """A finished chat stream of 8 MB (more than the kernel's socket buffers hold) replayed on
    the resume route to a client with a small receive window, which leaves in the middle."""
    probe = Probe()
    async with fault_server(probe, max_body_bytes=16 * 1024 * 1024) as (server, witness):
        stream_id = await big_finished_stream(server.port)
        base = await baseline(server)
        sock = small_window_socket(server.port)
        sock.sendall(
            get(f"/v1/chat/completions/chatcmpl-{stream_id}/events", "Last-Event-ID: 1\r\n")
        )
        await read_until(sock, b"data: ", count=3)
        # The replay is under way.
        await wait_for(lambda: METRICS.streams_active == base.streams + 1, IO_WAIT_S)
        close(sock, how)
        await settle(server, base)
        await witness.assert_flowing()


@CLOSES
async def test_close_while_following_a_live_stream(how: str) -> None:
    """Background mode (resume grace): the first client leaves, a second resumes on the resume
    route and leaves in its turn; the producer is cancelled once the grace has passed."""
    probe = Probe()
    async with fault_server(probe, resume_grace_s=0.3) as (server, witness):
        base = await baseline(server)
        service_generations = _generations(server)
        first = blocking_socket(server.port)
        first.sendall(chat_request(lorem(100_000, token_delay_s=0.005)))
        head = await read_until(first, b"data: ", count=5)
        stream_id = re.search(rb"x-rawsse-stream-id: ([\w-]+)", head)
        assert stream_id
        close(first, how)
        second = blocking_socket(server.port)
        second.sendall(
            get(
                f"/v1/chat/completions/{stream_id.group(1).decode()}/events",
                "Last-Event-ID: 3\r\n",
            )
        )
        resumed = await read_until(second, b"data: ", count=20)
        assert b"id: 4\n" in resumed  # replay from after the last id the client saw
        close(second, how)
        await settle(server, base, timeout=SETTLE_S + 0.3)
        await wait_for(lambda: not service_generations, IO_WAIT_S)
        await witness.assert_flowing()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_resume_route_closes_the_store_generator() -> None:
    """The resume route's client leaves while the producer waits for the socket (a replay
    larger than the kernel's buffers): the store's generator must be closed, not dropped."""
    import gc
    import warnings

    probe = Probe()
    async with running_server(fault_app(probe), max_body_bytes=16 * 1024 * 1024) as server:
        stream_id = await big_finished_stream(server.port)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sock = small_window_socket(server.port)
            sock.sendall(get(f"/v1/chat/completions/{stream_id}/events"))
            await read_until(sock, b"data: ", count=3)
            await wait_for(  # the producer is blocked on the full socket
                lambda: any(
                    c._body_writer is not None and c._body_writer.blocked_since is not None
                    for c in server.context.connections
                ),
                IO_WAIT_S,
            )
            reset_close(sock)
            await wait_for(lambda: not server.stats.connections_active, IO_WAIT_S)
            gc.collect()
    assert not [w for w in caught if "garbage collected" in str(w.message)]


async def big_finished_stream(port: int) -> str:
    """An 8 MB chat stream, finished: its id (its replay outgrows any socket buffer)."""
    text = " ".join(["w" * 1000] * 8000)
    body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": text}]}
    async with RawClient.connect(port) as client:
        await client.send(chat_request(body))
        data = await client.read_until_close(timeout=30)
    [response] = parse_responses(data)
    stream_id = response.header("x-rawsse-stream-id")
    assert stream_id and response.body.endswith(b"data: [DONE]\n\n")
    return stream_id


def small_window_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def _generations(server: Server) -> dict[str, Any]:
    """The chat service's live background generations (a white-box check)."""
    app = server.handler
    for route in app.routes:  # type: ignore[attr-defined]
        for handler in route.handlers.values():
            for cell in getattr(handler, "__closure__", None) or ():
                service = cell.cell_contents
                if hasattr(service, "_generations"):
                    return service._generations  # type: ignore[no-any-return]
    raise AssertionError("no chat service mounted")


# --- peers that stop reading or half-close ------------------------------------------------


async def test_zero_window_peer_is_evicted_and_producer_held_meanwhile() -> None:
    probe = Probe()
    async with fault_server(probe, send_timeout_s=0.5) as (server, witness):
        base = await baseline(server)
        evictions = METRICS.slow_client_evictions_total
        sock = socket.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(get("/sse?delay=0&size=1000"))  # as fast as the socket takes it
            await wait_for(lambda: METRICS.slow_client_evictions_total > evictions, IO_WAIT_S)
            # Backpressure held the producer: it made what the kernel's buffers and the
            # writer's high-water mark hold, not a growing queue.
            sndbuf_max = TCP_WMEM_MAX
            assert probe.sent["fault"] * 1000 < sndbuf_max + 4096 + 2 * 64 * 1024
            # The server closed its side by itself.
            await wait_for(lambda: server.stats.connections_active == base.connections, IO_WAIT_S)
        finally:
            sock.close()
        await settle(server, base)
        assert probe.balanced("fault")
        await witness.assert_flowing()


async def test_half_closed_peer_is_treated_as_gone() -> None:
    """A client that sends its request and shuts down its sending side: rawsse takes the FIN
    as the client leaving (as a browser's EventSource never half-closes), stops the producer
    and closes; nothing is left behind."""
    probe = Probe()
    async with fault_server(probe) as (server, witness):
        base = await baseline(server)
        sock = blocking_socket(server.port)
        sock.sendall(get("/sse?first=0.2", close=False))
        await read_until(sock, b"\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        with anyio.fail_after(IO_WAIT_S):
            while await recv_some(sock, IO_WAIT_S):
                pass  # the server closes its side too
        sock.close()
        await settle(server, base)
        assert probe.balanced("fault")
        # Half-closed before the request: answered or closed, never hung.
        sock = blocking_socket(server.port)
        sock.shutdown(socket.SHUT_WR)
        with anyio.fail_after(IO_WAIT_S):
            assert await recv_some(sock, IO_WAIT_S) == b""
        sock.close()
        await settle(server, base)
        await witness.assert_flowing()


# --- many connections, the connection limit -----------------------------------------------


async def test_a_thousand_connections_opened_and_dropped_at_once() -> None:
    probe = Probe()
    async with fault_server(probe) as (server, witness):
        base = await baseline(server)
        socks = []
        for i in range(1000):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", server.port))
            socks.append(sock)
            if i % 100 == 99:
                await anyio.lowlevel.checkpoint()  # let the server accept as we go
        await wait_for(
            lambda: server.stats.connections_active == base.connections + 1000,
            IO_WAIT_S,
            what="the thousand connections accepted",
        )
        requests = [
            get("/sse?delay=0.05"),
            get("/sse?first=30"),
            b"GET /sse HTTP/1.1\r\nHo",
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab",
            b"",
        ]
        for i, sock in enumerate(socks):
            with contextlib.suppress(BlockingIOError):
                sock.send(requests[i % len(requests)])
        # The 400 stream requests, nearly all started.
        await wait_for(lambda: probe.started["fault"] >= 350, 10)
        for i, sock in enumerate(socks):
            close(sock, "rst" if i % 2 else "fin")
        await settle(server, base, timeout=10)
        assert probe.balanced("fault")
        await witness.assert_flowing()
        await assert_still_serving_here(server.port)


async def test_connection_limit_reached_and_recovered() -> None:
    probe = Probe()
    async with fault_server(probe, max_connections=21) as (server, witness):
        base = await baseline(server)  # the witness holds one of the 21
        held = [blocking_socket(server.port) for _ in range(20)]
        for sock in held:
            sock.sendall(get("/sse?first=30"))
        await wait_for(lambda: probe.started["fault"] >= 20, IO_WAIT_S)
        refused = [blocking_socket(server.port) for _ in range(200)]
        statuses = Counter()
        for sock in refused:
            data = await read_until(sock, b"\r\n\r\n")
            [response] = parse_responses(
                data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n", head_only=True
            )
            statuses[response.status] += 1
            assert response.header("retry-after") == "1"
            sock.close()
        assert statuses == {503: 200}
        assert server.stats.connections_active == 21
        for sock in held:
            close(sock, "fin")
        await settle(server, base)
        assert probe.balanced("fault")
        await witness.assert_flowing()
        # Recovered: new streams are served again.
        sock = blocking_socket(server.port)
        sock.sendall(get("/sse?delay=0.01"))
        await read_until(sock, b'"i":', count=3)
        sock.close()
        await settle(server, base)


async def assert_still_serving_here(port: int) -> None:
    responses = await _request(port, get("/ping"))
    assert [r.status for r in responses] == [200]


async def _request(port: int, raw: bytes) -> list[Any]:
    async with RawClient.connect(port) as client:
        await client.send(raw)
        return parse_responses(await client.read_until_close(IO_WAIT_S))


# --- model backends that fail -------------------------------------------------------------


def chat_body(model: str, *, stream: bool = True) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


async def chat_events(port: int, model: str) -> tuple[Any, list[Any]]:
    [response] = await _request(port, chat_request(chat_body(model)))
    assert response.status == 200, response
    assert response.raw_body.endswith(b"0\r\n\r\n")  # a clean end of the chunked body
    events = EventParser().feed(response.body)
    return response, events


@pytest.mark.parametrize("model", ["raises-first", "raises-mid", "not-iterable"])
async def test_backend_that_raises_mid_stream_ends_with_error_frame(model: str) -> None:
    probe = Probe()
    async with fault_server(probe) as (server, witness):
        base = await baseline(server)
        response, events = await chat_events(server.port, model)
        check_openai_stream(events)
        errors = [json.loads(e.data)["error"] for e in events if e.data.startswith('{"error"')]
        assert len(errors) == 1 and errors[0]["type"] == "server_error"
        assert b"secret-internal-detail" not in response.body
        assert events[-1].data == "[DONE]"
        await settle(server, base)
        assert probe.backend_cleanups == (0 if model == "not-iterable" else 1)
        await witness.assert_flowing()


async def test_backend_that_raises_is_a_500_without_details() -> None:
    probe = Probe()
    async with fault_server(probe) as (server, witness):
        base = await baseline(server)
        for model in ("raises-first", "raises-mid", "raises-when-called"):
            [response] = await _request(server.port, chat_request(chat_body(model, stream=False)))
            assert response.status == 500, response
            assert b"secret-internal-detail" not in response.body
        [response] = await _request(server.port, chat_request(chat_body("raises-when-called")))
        assert response.status == 500 and b"secret-internal-detail" not in response.body
        await settle(server, base)
        await witness.assert_flowing()


@pytest.mark.parametrize("value", sorted(GARBAGE))
async def test_backend_yielding_garbage_types(value: str) -> None:
    probe = Probe()
    async with fault_server(probe) as (server, witness):
        base = await baseline(server)
        response, events = await chat_events(server.port, f"garbage-{value}")
        check_openai_stream(events)
        assert any(e.data.startswith('{"error"') for e in events)
        assert b"secret-internal-detail" not in response.body
        assert b'"content":"fine "' in response.body  # what came before the garbage went out
        assert b"after" not in response.body  # nothing after it did
        await settle(server, base)
        assert probe.backend_cleanups == 1
        await witness.assert_flowing()


@CLOSES
async def test_hanging_backend_gets_heartbeats_and_is_cancelled_by_the_client(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EventStream, "default_heartbeat_s", 0.05)
    probe = Probe()
    async with fault_server(probe) as (server, witness):
        base = await baseline(server)
        sock = blocking_socket(server.port)
        sock.sendall(chat_request(chat_body("hangs")))
        data = await read_until(sock, b'"content":"first "')
        data += await read_heartbeats(sock, 3)  # heartbeats while the model hangs
        assert data.count(b"data:") == 2  # the role chunk and the first token, nothing since
        close(sock, how)
        await settle(server, base)
        assert probe.backend_cleanups == 1  # the generator was closed: its finally ran
        await witness.assert_flowing()


async def test_hanging_backend_is_cancelled_by_shutdown() -> None:
    probe = Probe()
    app = fault_app(probe)
    server = Server(app, host="127.0.0.1", port=0, access_log=False)
    streams = METRICS.streams_active
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        sock = blocking_socket(server.port)
        sock.sendall(chat_request(chat_body("hangs")))
        await read_until(sock, b'"content":"first "')
        started = anyio.current_time()
        server.shutdown()
    # serve() returned: the stream was ended within the grace period, the backend closed.
    assert anyio.current_time() - started < server.limits.shutdown_grace_s + 2
    assert probe.backend_cleanups == 1
    assert METRICS.streams_active == streams and server.stats.connections_active == 0
    rest = b""
    with anyio.fail_after(IO_WAIT_S):
        while chunk := await recv_some(sock, IO_WAIT_S):
            rest += chunk
    sock.close()


# --- subprocess faults: file descriptors exhausted, churn and memory ----------------------


class Serve:
    """``rawsse serve`` in a subprocess, optionally with a low file descriptor limit."""

    def __init__(
        self, *args: str, nofile: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rawsse", "serve", "--port", "0", "--no-access-log", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=limit,  # only setrlimit, before exec
            cwd=ROOT,  # so that an APP under benchmarks/ imports
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.startswith("rawsse listening on http://"), (line, self.stop())
        self.port = int(line.strip().rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fds(self) -> int:
        return open_fds(self.pid)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self) -> dict[str, float]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        try:
            sock.sendall(get("/metrics"))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        finally:
            sock.close()
        [response] = parse_responses(data)
        assert response.status == 200
        out = {}
        for line in response.body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stderr.close()
        return err


def healthz(port: int, timeout: float = 5) -> int:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(get("/healthz"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    return parse_responses(data)[0].status


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fd_exhaustion_backs_off_and_recovers(backend: str) -> None:
    nofile = 64
    serve = Serve("--backend", backend, "--header-timeout", "60", nofile=nofile)
    held: list[socket.socket] = []
    try:
        # The flood starts right after the ready line: the server must survive it at startup
        # too (see test_server_that_starts_with_no_descriptor_to_spare_keeps_running).
        base_fds = serve.fds()
        assert base_fds < nofile - 20, base_fds
        # More idle connections than the server has descriptors left: it accepts until EMFILE,
        # and the rest wait in the listen backlog.
        held += [
            socket.create_connection(("127.0.0.1", serve.port), timeout=5)
            for _ in range(nofile + 20)
        ]
        wait_for_sync(
            lambda: serve.fds() >= nofile - 1,
            5,
            what="the server to run out of descriptors",
            state=lambda: f"{serve.fds()} open: {os.listdir(f'/proc/{serve.pid}/fd')}",
        )
        cpu_before = serve.cpu_s()
        time.sleep(1.5)
        cpu_used = serve.cpu_s() - cpu_before
        assert cpu_used < 0.5, f"accept loop spins on EMFILE: {cpu_used:.2f} s CPU in 1.5 s"
        # Connections it did accept are still served.
        held[0].sendall(get("/healthz"))
        held[0].settimeout(5)
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
        # Release them: the backlog is accepted and served, and new clients are too.
        for sock in held[:-5]:
            sock.close()
        for sock in held[-5:]:
            sock.sendall(get("/healthz"))
            sock.settimeout(10)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.close()
        held.clear()
        assert healthz(serve.port) == 200
        wait_for_sync(lambda: serve.fds() <= base_fds, 10, what="descriptors to return")
        metrics = serve.metrics()
        assert metrics["rawsse_connections_active"] == 1  # the /metrics request itself
    finally:
        for sock in held:
            sock.close()
        err = serve.stop()
    assert "Too many open files" in err, err
    assert serve.proc.returncode == 0, err


_EXHAUST_AT_READY = """
import os, resource, sys

class Stdout:
    # Uses up every free descriptor the moment the server says it is listening, as a flood
    # of connections arriving at startup does.
    def __init__(self, inner):
        self.inner = inner
        self.fillers = []

    def write(self, text):
        n = self.inner.write(text)
        if "rawsse listening on" in text:
            self.inner.flush()
            used = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (used, used))
            while True:
                try:
                    self.fillers.append(os.open("/dev/null", os.O_RDONLY))
                except OSError:
                    break
        return n

    def __getattr__(self, name):
        return getattr(self.inner, name)

sys.stdout = Stdout(sys.stdout)
from rawsse.cli import main
sys.argv = ["rawsse", *sys.argv[1:]]
sys.exit(main())
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_server_that_starts_with_no_descriptor_to_spare_keeps_running(backend: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _EXHAUST_AT_READY, "serve", "--port", "0", "--backend", backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"rawsse listening on")
        time.sleep(1.0)  # an observation window: does it stay up without descriptors?
        alive = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    assert alive, err
    assert proc.returncode == 0, err


def test_replay_store_at_its_budget_appends_in_constant_time() -> None:
    from rawsse.replay import MemoryReplayStore

    def append_cost_us(streams: int) -> float:
        store = MemoryReplayStore(max_total_bytes=256 * 1024, keep_after_end_s=300)
        frame = b"x" * 200
        for i in range(streams):  # every stream live, the store over its budget
            store.append_nowait(f"s{i}", "0", frame)
        count = 1000
        started = time.perf_counter()
        for k in range(count):
            store.append_nowait(f"s{k % streams}", str(k + 1), frame)
        return (time.perf_counter() - started) / count * 1e6

    few, many = append_cost_us(50), append_cost_us(3000)
    assert many < 8 * few + 5, f"{few:.1f} us per append with 50 streams, {many:.1f} with 3000"


@pytest.mark.parametrize(
    ("max_tokens", "status"),
    [(100_000, 200), (10_000_000, 400)],  # the most a demo model answers; far beyond it
)
def test_one_huge_request_does_not_stall_everyone_else(max_tokens: int, status: int) -> None:
    """An unpaced, non-streaming answer of the largest size the demo models accept is made
    while /healthz keeps answering at once; a larger one is refused outright."""
    import threading

    serve = Serve("--token-delay", "0")
    body = json.dumps(
        {"model": "lorem", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "x"}]}
    ).encode()
    statuses: list[int] = []
    lags: list[float] = []

    def huge() -> None:
        sock = socket.create_connection(("127.0.0.1", serve.port), timeout=60)
        try:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            statuses.append(int(sock.recv(65536).split(b" ", 2)[1]))
            while sock.recv(1 << 20):
                pass
        finally:
            sock.close()

    worker = threading.Thread(target=huge)
    try:
        worker.start()
        while worker.is_alive() and len(lags) < 20:  # probe while the answer is being made
            started = time.monotonic()
            assert healthz(serve.port, timeout=60) == 200
            lags.append(time.monotonic() - started)
            time.sleep(0.05)
        worker.join(timeout=60)
    finally:
        serve.stop()
    assert statuses == [status]
    assert lags and max(lags) < 1.0, f"/healthz waited {max(lags):.1f} s behind one request"


def test_churn_leaves_no_memory_or_descriptors_behind() -> None:
    """Four rounds of 500 chat streams opened, half read for a while, all dropped at once (RST
    and FIN): streams, connections and descriptors return to zero and memory stops growing.

    The server is the soak's app (the demo models behind ``mount_chat``) with a 1 MiB replay
    store that forgets finished streams after half a second: the demo app's store keeps up to
    64 MiB for five minutes, a growth by design that would hide a leak."""
    serve = Serve(
        "benchmarks.soak:soak_app",
        env={
            "RAWSSE_SOAK_TOKEN_DELAY_S": "0.01",
            "RAWSSE_SOAK_REPLAY_MIB": "1",
            "RAWSSE_SOAK_REPLAY_KEEP_S": "0.5",
        },
    )
    try:
        base_fds = serve.fds()
        rss = []
        text = " ".join(f"w{i}" for i in range(400))
        body = json.dumps(
            {"model": "echo", "stream": True, "messages": [{"role": "user", "content": text}]}
        ).encode()
        raw = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        ) + body
        for _ in range(4):
            socks = []
            for _ in range(500):
                sock = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
                sock.sendall(raw)
                socks.append(sock)
            wait_for_sync(
                lambda: serve.metrics()["rawsse_streams_active"] >= 500, 15, what="500 streams"
            )
            for sock in socks[::2]:
                sock.recv(65536)
            time.sleep(0.3)  # the scenario: half of the clients read for a while
            for i, sock in enumerate(socks):
                close(sock, "rst" if i % 2 else "fin")
            wait_for_sync(
                lambda: serve.metrics()["rawsse_streams_active"] == 0, 10, what="no streams"
            )
            wait_for_sync(lambda: serve.fds() <= base_fds, 10, what="descriptors to return")
            time.sleep(0.6)  # past the replay store's keep time (0.5 s): finished streams leave it
            rss.append(serve.rss_kib())
        metrics = serve.metrics()
        assert metrics["rawsse_connections_active"] == 1
        assert metrics["rawsse_client_disconnects_total"] >= 2000
        # The first round warms allocator pools; later rounds reuse them.
        assert rss[3] - rss[1] < 8 * 1024, f"RSS grew {rss} KiB"
    finally:
        err = serve.stop()
    assert serve.proc.returncode == 0, err
    assert "Traceback" not in err, err
