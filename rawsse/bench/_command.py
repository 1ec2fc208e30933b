"""``rawsse bench [URL]``: the load generator's command line.

Contract: ``add_arguments(parser)`` declares the options, ``run(args)`` runs the benchmark and
returns the exit status: 0 when the run happened and at least one stream completed (or was held
open), 1 when none did or the server it was to start did not start, 2 for an unusable command
line, 130 after Ctrl-C (the results so far are still printed). With no URL it starts
``rawsse serve`` (demo app, token delay 0, free port) in a subprocess, benchmarks it and stops
it, always.
``--json`` prints one JSON object on stdout (keys: ``rawsse.bench._report``); otherwise a table.
On a terminal, a progress line is redrawn on stderr twice a second.

The engine is ``rawsse.bench._run``; the default request is an OpenAI chat completion
(``--model lorem``, ``--max-tokens 16``, ``stream: true``) to ``/v1/chat/completions``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from rawsse.bench._report import format_table, progress_line, result_json
from rawsse.bench._run import BenchConfig, BenchState, run_bench
from rawsse.bench._server import ServerStartError, demo_server
from rawsse.client._exchange import Target
from rawsse.jsonio import JSONDecodeError, dumps, loads

__all__ = ["add_arguments", "build_config", "run"]

_DEFAULT_PATH = "/v1/chat/completions"
# Connections opened per second while ramping up: fast enough for 10,000 streams in 5 s, slow
# enough that a listen backlog (often 128 to 4096) is not overrun into SYN retries.
_RAMP_PER_S = 2000
# Anthropic's Messages API requires this header; its value is the API version it speaks.
_ANTHROPIC_VERSION = "2023-06-01"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``rawsse bench``'s options on ``parser``."""
    parser.add_argument(
        "url",
        nargs="?",
        help="server to benchmark (default: start `rawsse serve` on a free port and use it)",
    )
    load = parser.add_argument_group("load")
    load.add_argument("--streams", type=int, default=64, help="concurrent streams (default 64)")
    load.add_argument("--requests", type=int, help="total requests (default max(1000, streams))")
    load.add_argument("--duration", type=float, metavar="S", help="run for S seconds instead")
    load.add_argument(
        "--rate",
        type=float,
        metavar="N",
        help="open loop: start N requests per second on schedule, latency measured from the "
        "scheduled time; --streams caps how many are in flight",
    )
    load.add_argument(
        "--hold",
        type=float,
        metavar="S",
        help="open --streams streams once and hold them all open S seconds (memory, heartbeats)",
    )
    load.add_argument(
        "--ramp-s",
        type=float,
        metavar="S",
        help=f"spread connection starts over S seconds (default streams/{_RAMP_PER_S})",
    )
    request = parser.add_argument_group("request")
    request.add_argument("--path", default=_DEFAULT_PATH, help="path when URL has none")
    request.add_argument("--model", default="lorem", help="chat model (default lorem)")
    request.add_argument("--max-tokens", type=int, default=16, help="tokens per answer")
    request.add_argument("--prompt", default="Say something.", help="the user message")
    request.add_argument("-X", "--method", help="HTTP method (default POST with a body)")
    request.add_argument("--data", metavar="JSON", help="request body instead of a chat request")
    request.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header (repeatable)",
    )
    request.add_argument(
        "--terminal",
        default="auto",
        help="the stream's terminal frame: auto ([DONE] for /chat/completions, message_stop "
        "for /messages), none, or a data value or event type",
    )
    request.add_argument("--no-keepalive", action="store_true", help="a new connection each time")
    request.add_argument("--timeout", type=float, default=30.0, help="idle read timeout (s)")
    request.add_argument("--connect-timeout", type=float, default=10.0, help="connect timeout (s)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="one JSON object on stdout")
    output.add_argument(
        "--check",
        action="store_true",
        help="parse every event, check its data is JSON and (chat paths) the vendor's grammar",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress line")
    run_group = parser.add_argument_group("process")
    run_group.add_argument(
        "--backend",
        choices=("auto", "asyncio", "uvloop", "trio"),
        default="auto",
        help="event loop of the load generator (default auto: uvloop when installed, else "
        "asyncio; uvloop makes short streams about 40%% cheaper for the load generator)",
    )
    run_group.add_argument("--cpu", type=int, help="pin the load generator to this CPU")
    run_group.add_argument("--server-cpu", type=int, help="pin the started server to this CPU")
    run_group.add_argument(
        "--server-args", default="", help="extra arguments for the started `rawsse serve`"
    )


def _parse_headers(values: list[str]) -> list[tuple[str, str]]:
    headers = []
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header must look like 'Name: value': {value!r}")
        headers.append((name.strip(), rest.strip()))
    return headers


def _dialect(path: str) -> str | None:
    """The chat dialect a path speaks (for ``--check``'s grammar), if any."""
    path = path.split("?", 1)[0]
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/messages"):
        return "anthropic"
    return None


def _terminal(option: str, path: str) -> str | None:
    if option == "none":
        return None
    if option != "auto":
        return option
    return {"openai": "[DONE]", "anthropic": "message_stop", None: None}[_dialect(path)]


def build_config(args: argparse.Namespace, url: str) -> BenchConfig:
    """The ``BenchConfig`` for parsed ``args`` against ``url``; ``ValueError`` if unusable."""
    target = Target.from_url(url)
    if target.path in ("", "/"):
        target = Target(target.scheme, target.host, target.port, args.path)
    headers = _parse_headers(args.header)
    body: bytes | None
    if args.data is not None:
        try:
            body = dumps(loads(args.data))
        except JSONDecodeError as exc:
            raise ValueError(f"--data is not JSON: {exc}") from exc
    elif args.method in (None, "POST") and target.path.split("?", 1)[0].endswith(
        ("/chat/completions", "/messages")
    ):
        chat: dict[str, Any] = {
            "model": args.model,
            "messages": [{"role": "user", "content": args.prompt}],
            "max_tokens": args.max_tokens,
            "stream": True,
        }
        body = dumps(chat)
    else:
        body = None
    names = {name.lower() for name, _ in headers}
    if body is not None and "content-type" not in names:
        headers.append(("Content-Type", "application/json"))
    if _dialect(target.path) == "anthropic" and "anthropic-version" not in names:
        headers.append(("anthropic-version", _ANTHROPIC_VERSION))
    headers.append(("Accept", "text/event-stream"))
    modes = [args.requests is not None, args.duration is not None, args.hold is not None]
    if sum(modes) > 1:
        raise ValueError("give at most one of --requests, --duration and --hold")
    requests = args.requests
    if not any(modes):
        requests = max(1000, args.streams)
    ramp_s = args.ramp_s if args.ramp_s is not None else args.streams / _RAMP_PER_S
    return BenchConfig(
        target=target,
        method=args.method or ("POST" if body is not None else "GET"),
        headers=tuple(headers),
        body=body,
        streams=args.streams,
        requests=requests,
        duration_s=args.duration,
        rate=args.rate,
        hold_s=args.hold,
        ramp_s=ramp_s,
        connect_timeout_s=args.connect_timeout,
        read_timeout_s=args.timeout,
        terminal=_terminal(args.terminal, target.path),
        check=args.check,
        dialect=_dialect(target.path) if args.check and body is not None else None,
        keepalive=not args.no_keepalive,
    )


def _raise_fd_limit(streams: int) -> str | None:
    """Raise RLIMIT_NOFILE's soft limit to the hard one; a warning if still too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < streams + 64:
        return f"warning: open-file limit {soft} is below --streams {streams} (+64 spare)"
    return None


async def _show_progress(config: BenchConfig, state: BenchState) -> None:
    while True:
        await anyio.sleep(0.5)
        sys.stderr.write("\r\x1b[K" + progress_line(config, state))
        sys.stderr.flush()


async def _main(config: BenchConfig, state: BenchState, progress: bool) -> bool:
    """Run the benchmark; returns whether Ctrl-C (SIGINT) ended it early."""
    interrupted = False
    async with anyio.create_task_group() as tg:
        if progress:
            tg.start_soon(_show_progress, config, state)

        async def stop_on_sigint() -> None:
            # Ctrl-C ends the run like its end would, so the results so far are reported
            # (a KeyboardInterrupt would unwind through the task groups instead).
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    interrupted = True
                    tg.cancel_scope.cancel()

        tg.start_soon(stop_on_sigint)
        await run_bench(config, state)
        tg.cancel_scope.cancel()
    if progress:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
    return interrupted


def _resolve_backend(option: str) -> str:
    if option == "auto":
        return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return option


def _run_backend(config: BenchConfig, state: BenchState, backend: str, progress: bool) -> bool:
    if backend == "trio":
        return anyio.run(_main, config, state, progress, backend="trio")
    options = {"use_uvloop": backend == "uvloop"}
    return anyio.run(_main, config, state, progress, backend="asyncio", backend_options=options)


@contextmanager
def _server(args: argparse.Namespace) -> Iterator[str]:
    if args.url:
        yield args.url
        return
    with demo_server(shlex.split(args.server_args), cpu=args.server_cpu) as base_url:
        yield base_url


def run(args: argparse.Namespace) -> int:
    """Run ``rawsse bench`` with parsed ``args``; returns the exit status."""
    if args.streams < 1:
        print("rawsse bench: --streams must be at least 1", file=sys.stderr)
        return 2
    try:
        # Validate the options before starting a server.
        build_config(args, args.url or "http://127.0.0.1:1/")
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
    except (ValueError, OSError) as exc:
        print(f"rawsse bench: {exc}", file=sys.stderr)
        return 2
    warning = _raise_fd_limit(args.streams)
    if warning:
        print(warning, file=sys.stderr)
    progress = sys.stderr.isatty() and not args.no_progress
    backend = _resolve_backend(args.backend)
    state = BenchState()
    try:
        with _server(args) as url:
            config = build_config(args, url)
            interrupted = _run_backend(config, state, backend, progress)
    except ServerStartError as exc:
        print(f"rawsse bench: {exc}", file=sys.stderr)
        return 1
    result = result_json(config, state, config.target.url())
    result["backend"] = backend
    result["interrupted"] = interrupted
    if args.json:
        sys.stdout.write(dumps(result).decode() + "\n")
    else:
        print(format_table(result))
    if interrupted:
        return 130
    return 0 if state.completed else 1
