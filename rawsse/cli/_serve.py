"""``rawsse serve [APP]``: serve an App, or the built-in demo app, from the command line.

Contract: parses the options of the public contract, configures logging, builds the App
(importing ``module:attribute``, or the demo app of ``_demo_app`` with no APP), then serves
it on one process or supervises ``--workers N`` processes sharing the port. Prints exactly one
``rawsse listening on http://HOST:PORT`` line to stdout when ready. Exit status 0 after a
graceful shutdown.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
from typing import Any

from rawsse._http.limits import ServerLimits

__all__ = ["add_arguments", "load_app", "run"]

_DEFAULTS = ServerLimits()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``rawsse serve`` options to ``parser``."""
    parser.add_argument(
        "app",
        nargs="?",
        metavar="APP",
        help="import path module:attribute of a rawsse App (default: the built-in demo app)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = free port)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--uvloop", action="store_true", help="use uvloop (asyncio backend)")
    parser.add_argument(
        "--api-key",
        action="append",
        default=None,
        metavar="KEY",
        help="accepted API key (repeatable; also RAWSSE_API_KEYS=a,b; none = no auth)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="heartbeat after this much silence on a stream (default 15; 0 = off)",
    )
    parser.add_argument(
        "--retry-ms",
        type=int,
        default=None,
        metavar="MS",
        help="send a retry: hint at the start of each stream (default: none)",
    )
    parser.add_argument(
        "--resume-grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep a chat stream's producer running this long after its client left (default 0)",
    )
    parser.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="share resume and broadcast across processes and machines through Redis at URL "
        "(also RAWSSE_REDIS_URL; default: each process keeps its own)",
    )
    parser.add_argument(
        "--token-delay",
        type=float,
        default=0.02,
        metavar="SECONDS",
        help="pace of the demo models (default 0.02)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=_DEFAULTS.max_connections,
        metavar="N",
        help="concurrent connections before new ones get 503 (default: no limit)",
    )
    parser.add_argument("--max-header-bytes", type=int, default=_DEFAULTS.max_header_bytes)
    parser.add_argument("--max-headers", type=int, default=_DEFAULTS.max_headers)
    parser.add_argument("--max-body-bytes", type=int, default=_DEFAULTS.max_body_bytes)
    parser.add_argument("--header-timeout", type=float, default=_DEFAULTS.header_timeout_s)
    parser.add_argument("--body-timeout", type=float, default=_DEFAULTS.body_timeout_s)
    parser.add_argument("--keepalive-timeout", type=float, default=_DEFAULTS.keepalive_timeout_s)
    parser.add_argument(
        "--send-timeout",
        type=float,
        default=_DEFAULTS.send_timeout_s,
        help="evict a client that takes no data for this long (default 30)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=_DEFAULTS.shutdown_grace_s,
        help="seconds open requests and streams get to finish on shutdown (default 5)",
    )
    parser.add_argument(
        "--tcp-keepalive",
        type=float,
        default=None,
        metavar="SECONDS",
        help="TCP keepalive probes after this much idle time (default: the OS default)",
    )
    parser.add_argument(
        "--tcp-user-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="drop a connection whose sent data stays unacknowledged this long (Linux)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="allow cross-origin requests from ORIGIN (repeatable; '*' for any). Default: off",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument("--no-access-log", action="store_true", help="no line per request")


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
    """API keys from ``--api-key`` and ``RAWSSE_API_KEYS``; empty means no auth."""
    keys = list(args.api_key or [])
    keys += [k.strip() for k in os.environ.get("RAWSSE_API_KEYS", "").split(",") if k.strip()]
    return keys


def load_app(path: str) -> Any:
    """Import ``module:attribute``; a callable that is not an App is called to make one."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"rawsse serve: APP must look like module:attribute, got {path!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"rawsse serve: cannot import {module_name!r}: {exc}") from exc
    try:
        target = getattr(module, attribute)
    except AttributeError as exc:
        raise SystemExit(f"rawsse serve: {module_name!r} has no attribute {attribute!r}") from exc
    from rawsse.app import App

    if not isinstance(target, App) and callable(target) and not hasattr(target, "__await__"):
        made = target()
        if isinstance(made, App):
            return made
    return target


def _serve_argv_without_workers(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--port"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--port=")):
            continue
        out.append(arg)
        del i
    return out


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from rawsse.cli._workers import WORKER_ENV, supervise

    redis_url = args.redis or os.environ.get("RAWSSE_REDIS_URL") or None
    if redis_url:
        from rawsse.redis import REDIS_URL_ENV, RedisUnavailable, probe

        os.environ[REDIS_URL_ENV] = redis_url  # for the app (RedisBus.shared()) and workers
        if not os.environ.get(WORKER_ENV):
            import anyio

            try:
                anyio.run(probe, redis_url, backend=args.backend)
            except RedisUnavailable as exc:
                sys.stderr.write(f"rawsse serve: {exc}\n")
                return 1
    if args.workers > 1 and not os.environ.get(WORKER_ENV):
        if not redis_url:
            sys.stderr.write(
                f"rawsse serve: {args.workers} workers without --redis: resume and broadcast "
                "are per process (a resume that lands on another process gets 404); set "
                "--redis URL or RAWSSE_REDIS_URL to share them\n"
            )
        argv = sys.argv[sys.argv.index("serve") + 1 :] if "serve" in sys.argv else []
        return supervise(
            _serve_argv_without_workers(argv),
            args.workers,
            args.host,
            args.port,
            args.shutdown_grace,
        )

    from rawsse.server import Server, serve_until_signalled
    from rawsse.stream import EventStream

    EventStream.default_heartbeat_s = args.heartbeat
    EventStream.default_retry_ms = args.retry_ms
    if args.app:
        app = load_app(args.app)
    else:
        from rawsse.cli._demo_app import DemoOptions, create_demo_app

        app = create_demo_app(
            DemoOptions(
                api_keys=tuple(api_keys_from(args)),
                token_delay_s=args.token_delay,
                resume_grace_s=args.resume_grace,
                cors_origins=tuple(args.cors_origin or ()),
                redis_url=redis_url,
            )
        )
    server = Server(
        app,
        host=args.host,
        port=args.port,
        limits=limits_from_args(args),
        access_log=not args.no_access_log,
        reuse_port=bool(os.environ.get(WORKER_ENV)),
    )

    def announce(srv: Server) -> None:
        print(f"rawsse listening on {srv.url}", flush=True)

    # Everything built so far (modules, the app, the models) lives as long as the process: move it
    # out of the garbage collector's sight, so its passes over a server holding thousands of
    # streams stay short (they show up as heartbeat jitter and latency tails otherwise).
    gc.collect()
    gc.freeze()

    import anyio

    options: dict[str, Any] = {}
    if args.backend == "asyncio" and args.uvloop:
        options["use_uvloop"] = True

    async def serve() -> None:
        if not redis_url:
            await serve_until_signalled(server, on_ready=announce)
            return
        from rawsse.redis import RedisBus

        async with RedisBus.shared(redis_url):
            await serve_until_signalled(server, on_ready=announce)

    try:
        anyio.run(serve, backend=args.backend, backend_options=options)
    except KeyboardInterrupt:  # pragma: no cover - a signal before the handler was installed
        return 130
    except Exception as exc:
        from rawsse.redis import RedisUnavailable

        if isinstance(exc, RedisUnavailable):
            sys.stderr.write(f"rawsse serve: {exc}\n")
            return 1
        raise
    return 0
