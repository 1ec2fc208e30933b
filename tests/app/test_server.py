"""``Server``'s lifecycle on its own, both backends: ready, serving, graceful shutdown (idle
connections, requests in flight, streams asked to end, the grace running out), force exit,
background tasks, and that nothing outlives ``serve()``."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from rawsse._http.limits import ServerLimits
from rawsse._runtime.reactor import CURRENT_REACTOR
from rawsse.app import App
from rawsse.request import Request
from rawsse.response import Response, StreamingResponse
from rawsse.server import Server, bind_socket
from rawsse.stream import EventStream
from tests.support import (
    RawClient,
    get,
    parse_responses,
    wait_for,
)

pytestmark = pytest.mark.anyio


def lifecycle_app(state: dict[str, object]) -> App:
    app = App()

    @app.get("/ping")
    async def ping(req: Request) -> Response:
        state["reactor"] = CURRENT_REACTOR.get()
        return Response("pong")

    @app.get("/gate")
    async def gate(req: Request) -> Response:
        state["in_gate"] = True
        opened = state["gate"]
        assert isinstance(opened, anyio.Event)
        await opened.wait()
        return Response("through")

    @app.get("/events")
    async def events(req: Request) -> EventStream:
        async def produce(stream: EventStream) -> None:
            await stream.send({"n": 1})
            await anyio.sleep_forever()

        return EventStream(produce, heartbeat_s=0)

    @app.get("/stubborn")
    async def stubborn(req: Request) -> StreamingResponse:
        async def pieces() -> AsyncIterator[bytes]:
            try:
                yield b"first\n"
                await anyio.sleep_forever()  # ignores the request to finish
            finally:
                state["stubborn_closed"] = True

        return StreamingResponse(pieces())

    return app


class Serving:
    """A server run in a task of the test, and how its ``serve()`` ended."""

    def __init__(self, app: App, **limits: Any) -> None:
        self.server = Server(
            app, host="127.0.0.1", port=0, access_log=False, limits=ServerLimits(**limits)
        )
        self.returned = False

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        await self.server.serve(task_status=task_status)
        self.returned = True


async def test_ready_serving_and_stopped() -> None:
    state: dict[str, object] = {}
    serving = Serving(lifecycle_app(state))
    server = serving.server
    async with anyio.create_task_group() as tg:
        port = await tg.start(serving.serve)
        assert port == server.port != 0
        assert server.url == f"http://127.0.0.1:{port}"
        async with RawClient.connect(port) as client:
            await client.send(get("/ping"))
            [response] = parse_responses(await client.read_until_close())
        assert response.body == b"pong"
        assert state["reactor"] is server.reactor  # handlers reach the shared timer
        server.shutdown()
    assert serving.returned
    assert server.stats.connections_active == 0 and not server.context.connections
    with pytest.raises(ConnectionRefusedError):  # the listening socket is closed
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_shutdown_before_serving_returns_at_once() -> None:
    serving = Serving(App())
    serving.server.shutdown()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(serving.serve)
    assert serving.returned


async def test_graceful_shutdown_finishes_requests_in_flight_and_closes_idle_ones() -> None:
    state: dict[str, object] = {"gate": anyio.Event()}
    serving = Serving(lifecycle_app(state), shutdown_grace_s=5)
    server = serving.server
    async with anyio.create_task_group() as tg:
        port = await tg.start(serving.serve)
        async with RawClient.connect(port) as idle, RawClient.connect(port) as busy:
            await idle.send(get("/ping", close=False))
            await idle.read_until(b"pong")
            await busy.send(get("/gate", close=False))
            await wait_for(lambda: state.get("in_gate"))
            server.shutdown()
            idle_data = await idle.read_until_close()  # closed without waiting for its timeout
            assert not serving.returned  # the request in flight holds the shutdown open
            gate = state["gate"]
            assert isinstance(gate, anyio.Event)
            gate.set()
            [answer] = parse_responses(await busy.read_until_close())
    assert [r.status for r in parse_responses(idle_data)] == [200]
    # Answered, and told the connection closes (no keep-alive while shutting down).
    assert (answer.status, answer.body, answer.header("connection")) == (200, b"through", "close")
    assert serving.returned and server.connections_cut == 0


async def test_shutdown_asks_streams_to_end_and_cuts_what_ignores_it() -> None:
    state: dict[str, object] = {}
    serving = Serving(lifecycle_app(state), shutdown_grace_s=0.3)
    server = serving.server
    async with anyio.create_task_group() as tg:
        port = await tg.start(serving.serve)
        async with RawClient.connect(port) as polite, RawClient.connect(port) as stubborn:
            await polite.send(get("/events"))
            await polite.read_until(b'data: {"n":1}')
            await stubborn.send(get("/stubborn"))
            await stubborn.read_until(b"first")
            server.shutdown()
            # An EventStream ends at once with its terminator; the other is cut at the grace.
            polite_data = await polite.read_until_close()
            stubborn_data = await stubborn.read_until_close()
    assert polite_data.endswith(b"\r\n0\r\n\r\n")
    assert not stubborn_data.endswith(b"\r\n0\r\n\r\n")
    assert state["stubborn_closed"] is True
    assert server.connections_cut == 1
    assert server.stats.connections_active == 0


async def test_force_exit_cancels_everything_at_once() -> None:
    state: dict[str, object] = {"gate": anyio.Event()}
    serving = Serving(lifecycle_app(state), shutdown_grace_s=60)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serving.serve)
        async with RawClient.connect(port) as client:
            await client.send(get("/gate"))
            await wait_for(lambda: state.get("in_gate"))
            with anyio.fail_after(5):  # not the 60 s grace
                serving.server.force_exit()
                await client.read_until_close()
    assert serving.server.stats.connections_active == 0


async def test_background_tasks_run_while_serving_and_end_with_it() -> None:
    serving = Serving(App())
    server = serving.server
    with pytest.raises(RuntimeError, match="not running"):
        server.spawn(anyio.sleep, 0)
    ended = anyio.Event()
    started = anyio.Event()

    async def background() -> None:
        try:
            started.set()
            await anyio.sleep_forever()
        finally:
            ended.set()

    async with anyio.create_task_group() as tg:
        await tg.start(serving.serve)
        server.spawn(background)
        await started.wait()
        server.shutdown()
    assert ended.is_set()


async def test_serving_a_socket_bound_elsewhere() -> None:
    sock = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = sock.getsockname()[1]
    state: dict[str, object] = {}
    server = Server(lifecycle_app(state), sock=sock, access_log=False)
    async with anyio.create_task_group() as tg:
        assert await tg.start(server.serve) == port
        async with RawClient.connect(port) as client:
            await client.send(get("/ping"))
            assert b"pong" in await client.read_until_close()
        server.shutdown()
    assert sock.fileno() == -1  # serve() closed it
