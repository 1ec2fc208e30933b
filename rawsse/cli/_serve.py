"""``rawsse serve [APP]``: serve an App, or the built-in demo app, from the command line.

Contract: parses the options of the public contract, configures logging, builds the App
(importing ``module:attribute``, or the demo app of ``_demo_app`` with no APP), binds the
listening socket, then serves it on one process or supervises ``--workers N`` processes sharing
the port (``rawsse.cli._workers``). Prints exactly one ``rawsse listening on http://HOST:PORT``
line to stdout when ready.

Everything that can be checked before serving is, and a failure is one line on stderr
(``CommandError``, printed by ``rawsse.cli._main``): exit status 2 for a usage error (an option
out of range, a host that is no address, an APP that is not an App), 1 for a runtime failure (the
port in use, an optional package missing, an APP whose import fails). Never a traceback.

Options that configure the demo app only (``--api-key``, ``--resume-grace``, ``--token-delay``)
draw one warning line when given with an APP; ``--cors-origin`` applies to any App. The soft
limit on open files is raised to the hard one at start. Exit status 0 after a graceful shutdown,
1 when the shutdown grace ran out on open connections (they were cut).
"""

from __future__ import annotations

import argparse
import errno
import functools
import gc
import importlib
import inspect
import ipaddress
import logging
import os
import re
import resource
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

from rawsse._http.limits import ServerLimits
from rawsse.cli._errors import RUNTIME, USAGE, CommandError
from rawsse.cli._options import number, port
from rawsse.cli._supervised import WORKER_ENV, SupervisorLink

__all__ = ["add_arguments", "load_app", "run"]

_DEFAULTS = ServerLimits()
_DEMO_TOKEN_DELAY_S = 0.02
logger = logging.getLogger("rawsse.error")


_COUNT = number(int, 1)  # processes, limits
_NON_NEGATIVE_INT = number(int, 0)
_SECONDS = number(float, 0)  # 0 allowed: off, or no wait
_POSITIVE_SECONDS = number(float, 0, above=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``rawsse serve`` options to ``parser``."""
    parser.add_argument(
        "app",
        nargs="?",
        metavar="APP",
        help="import path module:attribute of a rawsse App, a request handler, or a function "
        "returning an App (default: the built-in demo app)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=port, default=8000, help="port (0 = a free port)")
    parser.add_argument(
        "--workers", type=_COUNT, default=1, metavar="N", help="processes sharing the port"
    )
    parser.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help="event loop"
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="run asyncio on uvloop (pip install 'rawsse[uvloop]')"
    )
    parser.add_argument(
        "--heartbeat",
        type=_SECONDS,
        default=15.0,
        metavar="SECONDS",
        help="send a heartbeat after this much silence on a stream (0 = off)",
    )
    parser.add_argument(
        "--retry-ms",
        type=_NON_NEGATIVE_INT,
        default=None,
        metavar="MS",
        help="send a retry: hint at the start of each stream (default: none)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="allow cross-origin requests from ORIGIN, for any App (repeatable; '*' for any; "
        "default: none)",
    )
    parser.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="share resume and broadcast across processes and machines through Redis at URL "
        "(also RAWSSE_REDIS_URL; default: each process keeps its own)",
    )
    demo = parser.add_argument_group("the demo app (ignored, with a warning, when APP is given)")
    demo.add_argument(
        "--api-key",
        action="append",
        default=None,
        metavar="KEY",
        help="accepted API key (repeatable; also RAWSSE_API_KEYS=a,b; default: none, no auth)",
    )
    demo.add_argument(
        "--resume-grace",
        type=_SECONDS,
        default=None,
        metavar="SECONDS",
        help="keep a chat stream's producer running this long after its client left "
        "(default 0: a disconnect cancels it)",
    )
    demo.add_argument(
        "--token-delay",
        type=_SECONDS,
        default=None,
        metavar="SECONDS",
        help=f"seconds between the demo models' tokens (default {_DEMO_TOKEN_DELAY_S})",
    )
    limits = parser.add_argument_group("limits (docs/limits.md)")
    limits.add_argument(
        "--max-connections",
        type=_NON_NEGATIVE_INT,
        default=_DEFAULTS.max_connections,
        metavar="N",
        help="concurrent connections before new ones get 503 (default 0: no limit)",
    )
    limits.add_argument(
        "--max-header-bytes",
        type=_COUNT,
        default=_DEFAULTS.max_header_bytes,
        metavar="BYTES",
        help="largest request header section (431 beyond)",
    )
    limits.add_argument(
        "--max-headers",
        type=_COUNT,
        default=_DEFAULTS.max_headers,
        metavar="N",
        help="most request header lines (431 beyond)",
    )
    limits.add_argument(
        "--max-body-bytes",
        type=_COUNT,
        default=_DEFAULTS.max_body_bytes,
        metavar="BYTES",
        help="largest request body (413 beyond)",
    )
    limits.add_argument(
        "--header-timeout",
        type=_POSITIVE_SECONDS,
        default=_DEFAULTS.header_timeout_s,
        metavar="SECONDS",
        help="time for the whole request header section to arrive (408 after)",
    )
    limits.add_argument(
        "--body-timeout",
        type=_POSITIVE_SECONDS,
        default=_DEFAULTS.body_timeout_s,
        metavar="SECONDS",
        help="time for the request body to arrive (408 after)",
    )
    limits.add_argument(
        "--keepalive-timeout",
        type=_POSITIVE_SECONDS,
        default=_DEFAULTS.keepalive_timeout_s,
        metavar="SECONDS",
        help="close a keep-alive connection idle this long",
    )
    limits.add_argument(
        "--send-timeout",
        type=_POSITIVE_SECONDS,
        default=_DEFAULTS.send_timeout_s,
        metavar="SECONDS",
        help="evict a client that takes no data for this long",
    )
    limits.add_argument(
        "--shutdown-grace",
        type=_SECONDS,
        default=_DEFAULTS.shutdown_grace_s,
        metavar="SECONDS",
        help="time open requests and streams get to finish on shutdown",
    )
    limits.add_argument(
        "--tcp-keepalive",
        type=_POSITIVE_SECONDS,
        default=None,
        metavar="SECONDS",
        help="TCP keepalive probes after this much idle time (default: the OS default)",
    )
    limits.add_argument(
        "--tcp-user-timeout",
        type=_POSITIVE_SECONDS,
        default=None,
        metavar="SECONDS",
        help="drop a connection whose sent data stays unacknowledged this long (Linux; "
        "default: the OS default)",
    )
    logs = parser.add_argument_group("logging")
    logs.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="least severe log lines shown (on stderr)",
    )
    logs.add_argument("--no-access-log", action="store_true", help="no log line per request")


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    """Build ``ServerLimits`` from parsed options."""
    return ServerLimits(
        max_header_bytes=args.max_header_bytes,
        max_headers=args.max_headers,
        max_body_bytes=args.max_body_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        keepalive_timeout_s=args.keepalive_timeout,
        max_connections=args.max_connections,
        send_timeout_s=args.send_timeout,
        shutdown_grace_s=args.shutdown_grace,
        tcp_keepalive_s=args.tcp_keepalive,
        tcp_user_timeout_s=args.tcp_user_timeout,
    )


def api_keys_from(args: argparse.Namespace) -> list[str]:
    """API keys from ``--api-key`` and ``RAWSSE_API_KEYS``; empty means no auth. A key no
    client could present (``--api-key ''`` from an unset variable) is a usage error, not a
    server that answers everyone 401."""
    from rawsse.chat.auth import key_problem

    keys = list(args.api_key or [])
    for key in keys:
        if (problem := key_problem(key)) is not None:
            raise CommandError(USAGE, f"--api-key: {problem}")  # never echo a key
    keys += [k.strip() for k in os.environ.get("RAWSSE_API_KEYS", "").split(",") if k.strip()]
    for key in keys[len(args.api_key or []) :]:
        if (problem := key_problem(key)) is not None:
            raise CommandError(USAGE, f"RAWSSE_API_KEYS: {problem}")
    return keys


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback (where user code failed)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" ({os.path.relpath(frame.filename)}:{frame.lineno})"


def _is_handler(target: object) -> bool:
    """Whether ``target`` is a request handler: ``async def handler(request)`` or alike."""
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(type(target), "__call__", None)  # noqa: B004 - the class's, not the object's
    return not inspect.isfunction(target) and inspect.iscoroutinefunction(call)


def _takes_no_arguments(target: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in signature.parameters.values()
    )


def load_app(path: str) -> Any:
    """Import ``module:attribute``: an App, a request handler, or a function returning either.

    Raises ``CommandError`` saying what is wrong in one line.
    """
    from rawsse.app import App

    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise CommandError(USAGE, f"APP must look like module:attribute (myapp:app), got {path!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CommandError(USAGE, f"cannot import {module_name!r}: {exc}") from exc
        raise CommandError(
            RUNTIME, f"importing {module_name!r} failed: {type(exc).__name__}: {exc}{_where(exc)}"
        ) from exc
    except Exception as exc:
        raise CommandError(
            RUNTIME, f"importing {module_name!r} failed: {type(exc).__name__}: {exc}{_where(exc)}"
        ) from exc
    try:
        target = getattr(module, attribute)
    except AttributeError as exc:
        raise CommandError(USAGE, f"{module_name!r} has no attribute {attribute!r}") from exc
    if isinstance(target, App) or _is_handler(target):
        return target
    what = "an App, a request handler (async def handler(request)) or a function returning an App"
    if not callable(target) or not _takes_no_arguments(target):
        raise CommandError(USAGE, f"{path} is {_a(target)}, not {what}")
    try:
        made = target()
    except Exception as exc:
        raise CommandError(
            RUNTIME, f"calling {path}() failed: {type(exc).__name__}: {exc}{_where(exc)}"
        ) from exc
    if isinstance(made, App) or _is_handler(made):
        return made
    raise CommandError(USAGE, f"{path}() returned {_a(made)}, not {what}")


def _a(value: object) -> str:
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _check_host(host: str, port: int) -> None:
    """A usage error unless ``host`` is an address, or a name that resolves."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):  # never ask DNS about a mistyped IPv4 address
        raise CommandError(USAGE, f"--host {host} is not a valid IP address")
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise CommandError(
            USAGE, f"--host {host}: not an address, nor a name that resolves ({reason})"
        ) from exc


def _check_backend(args: argparse.Namespace) -> None:
    if args.uvloop and args.backend != "asyncio":
        raise CommandError(USAGE, "--uvloop applies to --backend asyncio only")
    for wanted, module, extra in (
        (args.backend == "trio", "trio", "trio"),
        (args.uvloop, "uvloop", "uvloop"),
    ):
        if not wanted:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            option = "--backend trio" if module == "trio" else "--uvloop"
            raise CommandError(
                RUNTIME,
                f"{option} needs {module}, which is not installed here ({exc}): "
                f"pip install 'rawsse[{extra}]'",
            ) from exc


def listen_failure(host: str, port: int, exc: OSError) -> CommandError:
    """The one-line error for a socket that could not bind to ``host:port``."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    reason = (exc.strerror or str(exc)).lower()
    if exc.errno == errno.EADDRINUSE:
        reason += " (another process listens there: stop it, or choose --port; 0 = a free one)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        reason += " (not an address of this machine)"
    elif exc.errno == errno.EACCES and 0 < port < 1024:
        reason += " (ports below 1024 need privileges)"
    return CommandError(RUNTIME, f"cannot listen on {shown}: {reason}")


def _raise_open_file_limit() -> None:
    """The soft limit on open files up to the hard one: a server holds a socket per client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # pragma: no cover - a platform that refuses
        logger.debug("could not raise the open-file limit from %d to %d", soft, hard)


def _warn_demo_only(args: argparse.Namespace) -> None:
    given = [
        flag
        for flag, value in (
            ("--api-key", args.api_key),
            ("--resume-grace", args.resume_grace),
            ("--token-delay", args.token_delay),
        )
        if value is not None
    ]
    if args.app and given:
        verb = "configures" if len(given) == 1 else "configure"
        print(
            f"rawsse serve: warning: {', '.join(given)} {verb} the built-in demo app only and "
            f"{'is' if len(given) == 1 else 'are'} ignored with APP (pass api_keys= and "
            "resume_grace_s= to mount_chat in your app)",
            file=sys.stderr,
            flush=True,
        )


def _serve_argv_without_workers(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--port"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--port=")):
            continue
        out.append(arg)
    return out


def _build_app(args: argparse.Namespace) -> Any:
    from rawsse.app import App

    if args.app:
        app = load_app(args.app)
        if args.cors_origin:
            if not isinstance(app, App):
                raise CommandError(
                    USAGE, f"--cors-origin needs APP to be an App; {args.app} is a plain handler"
                )
            app.cors_origins = app.cors_origins | frozenset(args.cors_origin)
        return app
    from rawsse.cli._demo_app import DemoOptions, create_demo_app

    return create_demo_app(
        DemoOptions(
            api_keys=tuple(api_keys_from(args)),
            token_delay_s=_DEMO_TOKEN_DELAY_S if args.token_delay is None else args.token_delay,
            resume_grace_s=args.resume_grace or 0.0,
            cors_origins=tuple(args.cors_origin or ()),
            redis_url=args.redis,
        )
    )


def _use_redis(args: argparse.Namespace, worker: bool) -> None:
    """Settle ``args.redis`` (the option, else ``RAWSSE_REDIS_URL``) and export it for the app
    (``RedisBus.shared()``) and the workers; the supervisor checks that Redis answers."""
    from rawsse.redis import REDIS_URL_ENV

    args.redis = args.redis or os.environ.get(REDIS_URL_ENV) or None
    if args.redis:
        os.environ[REDIS_URL_ENV] = args.redis
        if args.workers > 1 and not worker:
            import anyio

            from rawsse.redis import RedisUnavailable, probe

            try:
                anyio.run(probe, args.redis, backend=args.backend)
            except RedisUnavailable as exc:
                raise CommandError(RUNTIME, str(exc)) from None


def _warn_per_process(args: argparse.Namespace) -> None:
    """The first worker of the demo app, once listening, says what several workers without
    Redis mean (an APP may share its state its own way)."""
    if os.environ.get(WORKER_ENV) == "0" and not args.redis and not args.app:
        print(
            "rawsse serve: warning: several workers without --redis: resume and broadcast are "
            "per process (a resume that lands on another process gets 404); set --redis URL "
            "or RAWSSE_REDIS_URL to share them",
            file=sys.stderr,
            flush=True,
        )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status (see the module contract)."""
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    worker = bool(os.environ.get(WORKER_ENV))
    _check_backend(args)
    _check_host(args.host, args.port)
    try:
        limits = limits_from_args(args)
    except ValueError as exc:  # pragma: no cover - the option types check the same
        raise CommandError(USAGE, str(exc)) from exc
    if not worker:
        _warn_demo_only(args)
        if not args.app:
            api_keys_from(args)  # a bad key is a usage error before anything starts
    _raise_open_file_limit()
    _use_redis(args, worker)

    if args.workers > 1 and not worker:
        from rawsse.cli._workers import supervise

        argv = sys.argv[sys.argv.index("serve") + 1 :] if "serve" in sys.argv else []
        return supervise(
            _serve_argv_without_workers(argv),
            args.workers,
            args.host,
            args.port,
            args.shutdown_grace,
        )

    link = SupervisorLink.from_environment()
    if link is not None and link.orphaned:
        raise CommandError(RUNTIME, "the supervisor exited before this worker started")

    from rawsse.server import Server, bind_socket
    from rawsse.stream import EventStream

    EventStream.default_heartbeat_s = args.heartbeat
    EventStream.default_retry_ms = args.retry_ms
    app = _build_app(args)
    try:
        sock = bind_socket(args.host, args.port, reuse_port=worker)
    except OSError as exc:
        raise listen_failure(args.host, args.port, exc) from exc
    _warn_per_process(args)
    server = Server(
        app,
        host=args.host,
        port=args.port,
        limits=limits,
        access_log=not args.no_access_log,
        sock=sock,
    )

    def announce(srv: Server) -> None:
        print(f"rawsse listening on {srv.url}", flush=True)

    # Everything built so far (modules, the app, the models) lives as long as the process: move it
    # out of the garbage collector's sight, so its passes over a server holding thousands of
    # streams stay short (they show up as heartbeat jitter and latency tails otherwise).
    gc.collect()
    gc.freeze()

    import anyio

    options: dict[str, Any] = {"use_uvloop": True} if args.uvloop else {}
    try:
        anyio.run(
            _serve,
            server,
            announce,
            link,
            args.redis,
            backend=args.backend,
            backend_options=options,
        )
    except KeyboardInterrupt:  # pragma: no cover - a signal before the handler was installed
        return 130
    except Exception as exc:
        if args.redis:
            from rawsse.redis import RedisUnavailable

            if isinstance(exc, RedisUnavailable):
                raise CommandError(RUNTIME, str(exc)) from None
        raise
    cut = server.connections_cut
    # What is left (the app, the ended streams' replay logs, timers not yet due) is freed by
    # the interpreter's exit, whose collector passes would walk all of it several times: ~0.4
    # CPU-s per 16,000 streams served, which on a shared machine other workers still ending
    # their streams need. Frozen, the passes skip it; nothing here needs a finaliser.
    gc.freeze()
    if link is not None:
        link.finished(cut)  # the supervisor reports it
    elif cut:
        logger.warning(
            "the shutdown grace (%g s) ran out: %d connection%s cut",
            args.shutdown_grace,
            cut,
            "" if cut == 1 else "s",
        )
    return 1 if cut else 0


async def _serve(
    server: Any,
    announce: Callable[[Any], None],
    link: SupervisorLink | None,
    redis_url: str | None,
) -> None:
    import contextlib

    import anyio

    from rawsse.server import serve_until_signalled

    bus: contextlib.AbstractAsyncContextManager[Any] = contextlib.nullcontext()
    if redis_url:
        from rawsse.redis import RedisBus

        bus = RedisBus.shared(redis_url)  # connected before the ready line, closed after
    async with bus, anyio.create_task_group() as tg:
        if link is not None:
            tg.start_soon(link.run, server)
        await serve_until_signalled(server, on_ready=announce)
        tg.cancel_scope.cancel()
