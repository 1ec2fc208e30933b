"""The listener and the server lifecycle: bind, accept, serve, shut down gracefully.

Contract: ``Server(handler, ...)`` binds a TCP socket and ``await server.serve()`` accepts
connections until ``server.shutdown()`` is called (or the task is cancelled). Shutdown is
graceful: stop accepting; let requests in progress finish; tell open streams to end (they send
their farewell frames and the chunked terminator); after ``shutdown_grace_s`` cancel what is
left. ``run(app)`` is the blocking entry point with signal handling: the first SIGINT/SIGTERM
shuts down gracefully, a second one cancels everything at once.

Accept failures such as EMFILE (out of file descriptors) back off and retry; they never spin
and never stop the server, and are logged once. Connections over ``max_connections`` get a 503
with Retry-After. ``connections_cut`` counts the connections still open when the shutdown
grace ran out (they are cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskStatus

from rawsse._counters import ServerStats
from rawsse._errors import ClientDisconnected
from rawsse._http.connection import Connection, ConnectionContext, Handler, linger
from rawsse._http.head import error_response_bytes
from rawsse._http.limits import ServerLimits
from rawsse._runtime.backend import running_loop
from rawsse._runtime.reactor import CURRENT_REACTOR, Reactor
from rawsse._runtime.scopes import native_cancel_scope
from rawsse._runtime.transport import send_now

__all__ = ["Server", "bind_socket", "run"]

logger = logging.getLogger("rawsse.error")

# Accept errors that mean "out of resources right now": back off and try again.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# A client that connected and gave up before accept(): nothing to do.
_TRANSIENT_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EAGAIN}
_ACCEPT_BATCH = 128
_BACKOFF_MIN_S = 0.01
_BACKOFF_MAX_S = 1.0
# At most this many refused connections linger at once to deliver their 503 politely.
_MAX_LINGERING_REFUSALS = 256
_BACKLOG = 4096


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Create a non-blocking listening TCP socket bound to ``host:port`` (0 picks a port)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _tcp_options(limits: ServerLimits) -> list[tuple[int, int, int]]:
    """The (level, option, value) triples for TCP keepalive and user timeout, where supported."""
    options: list[tuple[int, int, int]] = []
    if limits.tcp_keepalive_s is not None:
        idle = max(1, round(limits.tcp_keepalive_s))
        options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
        for name, value in (
            ("TCP_KEEPIDLE", idle),
            ("TCP_KEEPINTVL", max(1, idle // 3)),
            ("TCP_KEEPCNT", 3),
        ):
            if hasattr(socket, name):
                options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    if limits.tcp_user_timeout_s is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
        options.append(
            (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, round(limits.tcp_user_timeout_s * 1000))
        )
    return options


def _apply_socket_options(sock: socket.socket, options: list[tuple[int, int, int]]) -> None:
    for level, option, value in options:
        try:
            sock.setsockopt(level, option, value)
        except OSError:  # pragma: no cover - an option this kernel refuses
            logger.debug("socket option %s/%s refused", level, option)


def _starved_message(exc: OSError) -> str:
    """What to say, once, when accept() fails for want of resources."""
    if exc.errno != errno.EMFILE:
        return (
            f"cannot accept connections ({exc.strerror}): new ones wait in the listen queue; "
            "retrying while serving the others (said once)"
        )
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        f"out of file descriptors ({exc.strerror}; this process may open {soft}): new "
        "connections wait in the listen queue until some close, the others are served; raise "
        "the limit (ulimit -n, systemd LimitNOFILE=) or add --workers (said once)"
    )


class _ConnectionSpawner:
    """Starts one task per connection as cheaply as the event loop allows.

    anyio's ``start_soon`` adds a task handle, a name, an event and (on asyncio) a task state to
    every task (0.5-1.5 KiB); a server holding 10,000 idle streams feels that. Connection tasks
    never raise and never return values, so they are started on the event loop's own terms:
    plain loop tasks on asyncio, tracked here and cancelled and awaited when the server stops;
    a trio nursery of their own on trio (``open()``). Structured either way, just not through
    anyio.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._forget = self._tasks.discard
        self._nursery: Any = None  # trio's
        self._loop = running_loop()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls) -> AsyncIterator[_ConnectionSpawner]:
        """A spawner whose tasks end (cancelled by ``cancel_all``) before this block does."""
        spawner = cls()
        if spawner._loop is not None:
            yield spawner
            return
        import trio

        async with trio.open_nursery() as nursery:
            spawner._nursery = nursery
            yield spawner

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None:
            # (A constant name: trio would otherwise make one string per task.)
            self._nursery.start_soon(lambda: coro, name="rawsse connection")
            return
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._forget)  # one bound method for all tasks, not one each

    async def cancel_all(self) -> None:
        """Cancel the tasks; on asyncio wait until they have finished (on trio the nursery
        waits when its block ends)."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            return
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, return_exceptions=True)


class Server:
    """Serve ``handler`` (an ``App``) on one listening socket."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        limits: ServerLimits | None = None,
        access_log: bool = True,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.limits = limits or ServerLimits()
        self.reuse_port = reuse_port
        self._sock = sock
        self._requested_port = port
        self.port = port
        self.stats = ServerStats()
        self.reactor = Reactor()
        self.context = ConnectionContext(
            handler, self.limits, self.reactor, stats=self.stats, access_log=access_log
        )
        bind = getattr(handler, "bind_server", None)
        if callable(bind):
            bind(self)
        self._services: anyio.abc.TaskGroup | None = None
        self._spawner: _ConnectionSpawner | None = None
        self._accept_scope: anyio.CancelScope | None = None
        self._serve_scope: anyio.CancelScope | None = None
        self._shutdown_requested = False
        self._lingering = 0
        # Connections still open when the shutdown grace ran out, cancelled without a goodbye.
        self.connections_cut = 0
        self._tcp_options = _tcp_options(self.limits)
        self.started_at = time.monotonic()

    @property
    def url(self) -> str:
        """The base URL clients reach this server at."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def spawn(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``func(*args)`` as a background task of the server (it outlives the request
        that started it, and is cancelled when the server has shut down)."""
        if self._services is None:
            raise RuntimeError("the server is not running")
        self._services.start_soon(func, *args)

    def shutdown(self) -> None:
        """Begin a graceful shutdown (idempotent; safe to call from a signal task)."""
        self._shutdown_requested = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()

    def force_exit(self) -> None:
        """Cancel everything now: no grace period."""
        self.shutdown()
        if self._serve_scope is not None:
            self._serve_scope.cancel()

    async def serve(
        self,
        *,
        task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
        on_ready: Callable[[Server], None] | None = None,
    ) -> None:
        """Accept and serve connections until shut down; reports the bound port when ready."""
        lsock = self._sock or bind_socket(
            self.host, self._requested_port, reuse_port=self.reuse_port
        )
        self.port = lsock.getsockname()[1]
        # Connection tasks inherit this: a handler's ``Ticker`` paces on the shared timer.
        reactor_token = CURRENT_REACTOR.set(self.reactor)
        self.context.new_cancel_scope = native_cancel_scope()
        try:
            with anyio.CancelScope() as serve_scope:
                self._serve_scope = serve_scope
                async with anyio.create_task_group() as services:
                    self._services = services
                    services.start_soon(self.reactor.run)
                    async with (
                        anyio.create_task_group() as connections,
                        _ConnectionSpawner.open() as spawner,
                    ):
                        self._spawner = spawner
                        try:
                            with anyio.CancelScope() as accept_scope:
                                self._accept_scope = accept_scope
                                if self._shutdown_requested:
                                    accept_scope.cancel()
                                task_status.started(self.port)
                                if on_ready is not None:
                                    on_ready(self)
                                await self._accept_loop(lsock, connections)
                            lsock.close()
                            await self._drain_connections()
                        finally:
                            # Also when serve() itself is cancelled: no connection outlives it.
                            await spawner.cancel_all()
                        connections.cancel_scope.cancel()
                    services.cancel_scope.cancel()
        finally:
            CURRENT_REACTOR.reset(reactor_token)
            lsock.close()
            # Admitted connections whose task was cancelled before it ever ran.
            for connection in list(self.context.connections):
                connection.release()

    async def _drain_connections(self) -> None:
        ctx = self.context
        ctx.shutting_down = True
        # No cyclic collection while the streams end: ending 10,000 streams allocates enough
        # to trigger passes that walk every stream's objects again and again (half the CPU of
        # a shutdown, measured). A stream leaves no reference cycle behind, and the collector
        # is back on (as it was) once they have ended.
        collecting = gc.isenabled()
        gc.disable()
        try:
            await self._end_connections(ctx)
        finally:
            if collecting:
                gc.enable()

    async def _end_connections(self, ctx: ConnectionContext) -> None:
        connections = list(ctx.connections)
        all_closed = ctx.all_closed = anyio.Event() if connections else None
        loop = running_loop()
        if loop is not None:
            # asyncio: anyio's CancelScope.cancel() writes the repr of the task calling it
            # into its message, ~10 us each from the server task; a loop callback is no task,
            # so 100,000 streams are told without 100,000 reprs.
            loop.call_soon(_begin_shutdown, connections)
        else:
            _begin_shutdown(connections)
        if all_closed is not None:
            with anyio.move_on_after(self.limits.shutdown_grace_s):
                await all_closed.wait()
            self.connections_cut = len(ctx.connections)

    async def _accept_loop(self, lsock: socket.socket, tg: anyio.abc.TaskGroup) -> None:
        ctx = self.context
        limits = self.limits
        spawner = self._spawner
        assert spawner is not None
        backoff = _BACKOFF_MIN_S
        starved = False  # out of descriptors: said once, not once per retry
        while True:
            # No deadline: waits for clients for as long as the server runs.
            await anyio.wait_readable(lsock)
            for _ in range(_ACCEPT_BATCH):
                try:
                    sock, addr = lsock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in _RESOURCE_ERRNOS:
                        if not starved:
                            starved = True
                            logger.warning("%s", _starved_message(exc))
                        await anyio.sleep(backoff)
                        backoff = min(backoff * 2, _BACKOFF_MAX_S)
                        break
                    if exc.errno in _TRANSIENT_ERRNOS:
                        continue
                    raise
                backoff = _BACKOFF_MIN_S
                sock.setblocking(False)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if self._tcp_options:
                        _apply_socket_options(sock, self._tcp_options)
                # Counted here, at accept (a Connection counts from its construction), not
                # when its task starts: a whole accept batch cannot pass the limit.
                if (
                    limits.max_connections
                    and ctx.stats.connections_active >= limits.max_connections
                ):
                    self._refuse(sock, tg)
                    continue
                # (The host interned: many connections from one address share its string.)
                client = (sys.intern(addr[0]), addr[1]) if isinstance(addr, tuple) else None
                spawner.spawn(Connection(sock, client, ctx).run())

    def _refuse(self, sock: socket.socket, tg: anyio.abc.TaskGroup) -> None:
        self.stats.count_response(503)
        response = error_response_bytes(
            503, "server at its connection limit; retry shortly", [(b"retry-after", b"1")]
        )
        try:
            send_now(sock, response)
        except ClientDisconnected:
            sock.close()
            return
        if self._lingering >= _MAX_LINGERING_REFUSALS:
            sock.close()
            return
        tg.start_soon(self._linger_close, sock)

    async def _linger_close(self, sock: socket.socket) -> None:
        self._lingering += 1
        try:
            await linger(sock)
        finally:
            self._lingering -= 1
            sock.close()


def _begin_shutdown(connections: list[Connection]) -> None:
    for connection in connections:
        connection.begin_shutdown()


async def _watch_signals(
    server: Server, signals: AsyncIterator[int], on_first: Callable[[], None] | None
) -> None:
    count = 0
    async for _ in signals:
        count += 1
        if count == 1:
            if on_first is not None:
                on_first()
            server.shutdown()
        else:
            server.force_exit()
            return


async def serve_until_signalled(
    server: Server,
    *,
    on_ready: Callable[[Server], None] | None = None,
    on_first_signal: Callable[[], None] | None = None,
) -> None:
    """Serve ``server`` until SIGINT/SIGTERM (graceful), a second signal forcing the exit."""
    # The receiver is open before the first connection is accepted: opening it needs file
    # descriptors (and an import), which a flood of connections may leave none of later.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, server, signals, on_first_signal)
            await server.serve(on_ready=on_ready)
            tg.cancel_scope.cancel()


def run(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: str = "asyncio",
    limits: ServerLimits | None = None,
    access_log: bool = True,
    use_uvloop: bool = False,
) -> None:
    """Serve ``handler`` until SIGINT/SIGTERM; prints the ready line when listening."""
    server = Server(handler, host=host, port=port, limits=limits, access_log=access_log)

    def announce(srv: Server) -> None:
        print(f"rawsse listening on {srv.url}", flush=True)

    backend_options = {"use_uvloop": True} if backend == "asyncio" and use_uvloop else {}
    anyio.run(
        lambda: serve_until_signalled(server, on_ready=announce),
        backend=backend,
        backend_options=backend_options,
    )
    sys.stdout.flush()
