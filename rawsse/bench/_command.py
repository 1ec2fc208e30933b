"""``rawsse bench [URL]``: the load generator's command line.

Contract: ``add_arguments(parser)`` declares the options, ``run(args)`` runs the benchmark and
returns the exit status: 0 when the run happened and at least one stream completed (or was held
open), 1 when none did, a load process ended without results, or the server it was to start did
not start, 2 for an unusable command line (``--requests 0``, ``--token-delay`` with a URL),
130 after Ctrl-C (the results so far are still printed). Problems are one line on stderr
(``CommandError``).

With no URL it starts ``rawsse serve`` (the demo app, on a free port) in a subprocess at a
realistic pace, a token every ``--token-delay`` seconds (default 0.02: 50 tokens a second),
benchmarks it and stops it, always; the table and the JSON (``server``) say so.

``--processes N`` runs the load from N processes (``rawsse.bench._processes``); by default
one, or as many as the streams need when they exceed the descriptors one process may open (the
hard ``RLIMIT_NOFILE``), said on stderr. Against a server on IPv4 loopback, several processes,
or one with 10,000 streams or more, bind their connections to source addresses of their own in
127.0.0.0/8 and to source ports bench chooses (``rawsse.bench._sources``).

``--json`` prints one JSON object on stdout (keys: ``rawsse.bench._report``, plus ``backend``,
``interrupted``, ``processes``, ``source_addresses`` and ``server``); otherwise a table with a
histogram. ``--plot FILE.png`` also draws the histograms with matplotlib (``rawsse.bench._plot``).
On a terminal, a progress line is redrawn on stderr twice a second.

The engine is ``rawsse.bench._run``; the default request is an OpenAI chat completion
(``--model lorem``, ``--max-tokens 16``, ``stream: true``) to ``/v1/chat/completions``; to
another chat path it is that path's format (``rawsse.cli._chat_request``: Anthropic, Gemini
with the model in the path, the OpenAI-shaped ChatGPT-web and envelope routes).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import resource
import shlex
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rawsse.bench._drive import drive, resolve_backend
from rawsse.bench._report import format_table, plural, progress_line, result_json
from rawsse.bench._run import BenchConfig, BenchState
from rawsse.bench._server import DEFAULT_TOKEN_DELAY_S, ServerStartError, demo_server
from rawsse.bench._sources import plan_sources
from rawsse.cli._chat_request import ANTHROPIC_VERSION, chat_request, request_format
from rawsse.cli._errors import RUNTIME, USAGE, CommandError
from rawsse.cli._options import number
from rawsse.client._exchange import Target
from rawsse.jsonio import JSONDecodeError, dumps, loads

__all__ = ["add_arguments", "build_config", "raise_fd_limit", "run"]

_DEFAULT_PATH = "/v1/chat/completions"
# Connections opened per second while ramping up: fast enough for 10,000 streams in 5 s, slow
# enough that a listen backlog (often 128 to 4096) is not overrun into SYN retries.
_RAMP_PER_S = 2000
# Descriptors a load process keeps for itself beside its streams (the event loop, pipes,
# imports).
_SPARE_FDS = 256

_COUNT = number(int, 1)
_POSITIVE = number(float, 0, above=True)
_NON_NEGATIVE = number(float, 0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``rawsse bench``'s options on ``parser``."""
    parser.add_argument(
        "url",
        nargs="?",
        help="server to benchmark (default: start `rawsse serve` on a free port and use it)",
    )
    load = parser.add_argument_group("load")
    load.add_argument("--streams", type=_COUNT, default=64, metavar="N", help="concurrent streams")
    load.add_argument(
        "--requests",
        type=_COUNT,
        metavar="R",
        help="total requests (default max(1000, streams))",
    )
    load.add_argument(
        "--duration",
        type=_POSITIVE,
        metavar="S",
        help="run for S seconds instead of a number of requests (default: by requests)",
    )
    load.add_argument(
        "--rate",
        type=_POSITIVE,
        metavar="N",
        help="open loop: start N requests per second on schedule, latency measured from the "
        "scheduled time; --streams caps how many are in flight (default: closed loop)",
    )
    load.add_argument(
        "--hold",
        type=_POSITIVE,
        metavar="S",
        help="open --streams streams once and hold them all open S seconds (memory, "
        "heartbeats; default: off)",
    )
    load.add_argument(
        "--ramp-s",
        type=_NON_NEGATIVE,
        metavar="S",
        help=f"spread connection starts over S seconds (default streams/{_RAMP_PER_S})",
    )
    load.add_argument(
        "--processes",
        type=_COUNT,
        metavar="N",
        help="load processes sharing the streams, each from its own loopback source address "
        "(default: 1, or as many as the streams need descriptors)",
    )
    request = parser.add_argument_group("request")
    request.add_argument("--path", default=_DEFAULT_PATH, help="path when URL has none")
    request.add_argument("--model", default="lorem", help="chat model")
    request.add_argument(
        "--max-tokens", type=_COUNT, default=16, metavar="N", help="tokens per answer"
    )
    request.add_argument("--prompt", default="Say something.", help="the user message")
    request.add_argument("-X", "--method", help="HTTP method (default POST with a body, else GET)")
    request.add_argument(
        "--data", metavar="JSON", help="request body instead of a chat request (default: none)"
    )
    request.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header (repeatable; default: none)",
    )
    request.add_argument(
        "--terminal",
        default="auto",
        help="the stream's terminal frame: auto ([DONE] for /chat/completions, message_stop "
        "for /messages), none, or a data value or event type",
    )
    request.add_argument("--no-keepalive", action="store_true", help="a new connection each time")
    request.add_argument(
        "--timeout", type=_POSITIVE, default=30.0, metavar="S", help="idle read timeout"
    )
    request.add_argument(
        "--connect-timeout", type=_POSITIVE, default=10.0, metavar="S", help="connect timeout"
    )
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="one JSON object on stdout")
    output.add_argument(
        "--check",
        action="store_true",
        help="parse every event, check its data is JSON and (chat paths) the vendor's grammar",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress line")
    output.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw the time-to-first-event and gap histograms to FILE (needs matplotlib: "
        "pip install 'rawsse[bench]'; default: none)",
    )
    started = parser.add_argument_group("the server bench starts when given no URL")
    started.add_argument(
        "--token-delay",
        type=_NON_NEGATIVE,
        metavar="S",
        help=f"seconds between its demo models' tokens (default {DEFAULT_TOKEN_DELAY_S}; "
        "0 = as fast as it can)",
    )
    started.add_argument(
        "--server-args",
        metavar="ARGS",
        help="extra arguments for it, as one string (default: none)",
    )
    started.add_argument(
        "--server-cpu", type=int, metavar="CPU", help="pin it to this CPU (default: not pinned)"
    )
    run_group = parser.add_argument_group("process")
    run_group.add_argument(
        "--backend",
        choices=("auto", "asyncio", "uvloop", "trio"),
        default="auto",
        help="event loop of the load generator (default auto: uvloop when installed, else "
        "asyncio; uvloop makes short streams about 40%% cheaper for the load generator)",
    )
    run_group.add_argument(
        "--cpu", type=int, help="pin the load generator to this CPU (default: not pinned)"
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
    elif args.method in (None, "POST"):
        body = chat_request(target.path, args.model, args.prompt, args.max_tokens)
    else:
        body = None
    names = {name.lower() for name, _ in headers}
    if body is not None and "content-type" not in names:
        headers.append(("Content-Type", "application/json"))
    if request_format(target.path) == "anthropic" and "anthropic-version" not in names:
        headers.append(("anthropic-version", ANTHROPIC_VERSION))
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


def raise_fd_limit(streams: int) -> str | None:
    """Raise RLIMIT_NOFILE's soft limit to the hard one; a warning if still too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < streams + 64:
        return (
            f"rawsse bench: warning: open-file limit {soft:,} is below {plural(streams, 'stream')} "
            "(+64 spare): use more --processes"
        )
    return None


def streams_per_process() -> int | None:
    """How many streams one load process may hold (its hard descriptor limit, less some to
    spare); None when unlimited."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if hard == resource.RLIM_INFINITY else max(1, hard - _SPARE_FDS)


def _processes(args: argparse.Namespace) -> int:
    """``--processes``, or as many as the streams need descriptors (said on stderr)."""
    if args.processes is not None:
        return int(args.processes)
    per_process = streams_per_process()
    if per_process is None or args.streams <= per_process:
        return 1
    processes: int = math.ceil(args.streams / per_process)
    print(
        f"rawsse bench: {plural(args.streams, 'stream')} need more descriptors than one process "
        f"may open ({per_process + _SPARE_FDS:,}): running {processes} load processes",
        file=sys.stderr,
    )
    if not args.url and "--workers" not in (args.server_args or ""):
        print(
            "rawsse bench: the server it starts is one process with the same limit: give it "
            f"--server-args '--workers {processes}'",
            file=sys.stderr,
        )
    return processes


def _check_server_options(args: argparse.Namespace) -> None:
    if not args.url:
        return
    given = [
        flag
        for flag, value in (
            ("--token-delay", args.token_delay),
            ("--server-args", args.server_args),
            ("--server-cpu", args.server_cpu),
        )
        if value is not None
    ]
    if given:
        raise CommandError(
            USAGE,
            f"{', '.join(given)} set{'s' if len(given) == 1 else ''} up the server bench starts "
            "when given no URL; with a URL, configure that server",
        )


@contextmanager
def _server(args: argparse.Namespace, info: dict[str, Any]) -> Iterator[str]:
    """The URL to benchmark: the given one, or a server started here (described in
    ``info``)."""
    if args.url:
        yield args.url
        return
    delay = DEFAULT_TOKEN_DELAY_S if args.token_delay is None else args.token_delay
    extra = shlex.split(args.server_args or "")
    try:
        with demo_server(extra, cpu=args.server_cpu, token_delay_s=delay) as base_url:
            pace = f"a token every {delay * 1000:g} ms" if delay else "tokens unpaced"
            info.update(
                started=True,
                token_delay_s=delay,
                args=extra,
                description=f"started by bench: rawsse serve (the demo app, {pace}: "
                "--token-delay)" + (f" {shlex.join(extra)}" if extra else ""),
            )
            yield base_url
    except ServerStartError as exc:
        raise CommandError(RUNTIME, str(exc)) from exc


def _address(host: str, port: int) -> str:
    """The address ``host`` resolves to (``host`` itself when it does not)."""
    try:
        return str(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])
    except OSError:
        return host


def _run_here(
    config: BenchConfig, backend: str, progress: bool
) -> tuple[BenchState, bool, list[str]]:
    state = BenchState()

    def show() -> None:
        sys.stderr.write("\r\x1b[K" + progress_line(config, state))
        sys.stderr.flush()

    interrupted = drive(config, state, backend, show if progress else None)
    return state, interrupted, []


def _run_processes(
    config: BenchConfig, configs: list[BenchConfig], backend: str, progress: bool
) -> tuple[BenchState, bool, list[str]]:
    from rawsse.bench._processes import run_processes

    def show(state: BenchState) -> None:
        sys.stderr.write("\r\x1b[K" + progress_line(config, state))
        sys.stderr.flush()

    result = run_processes(configs, backend, show if progress else None)
    return result.state, result.interrupted, result.failures


def run(args: argparse.Namespace) -> int:
    """Run ``rawsse bench`` with parsed ``args``; returns the exit status."""
    _check_server_options(args)
    try:
        # Validate the options before starting a server.
        build_config(args, args.url or "http://127.0.0.1:1/")
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
    except (ValueError, OSError) as exc:
        raise CommandError(USAGE, str(exc)) from exc
    if args.plot:
        from rawsse.bench._plot import check_plotting

        check_plotting()
    processes = _processes(args)
    warning = raise_fd_limit(math.ceil(args.streams / processes))
    if warning:
        print(warning, file=sys.stderr)
    progress = sys.stderr.isatty() and not args.no_progress
    backend = resolve_backend(args.backend)
    server: dict[str, Any] = {}
    with _server(args, server) as url:
        config = build_config(args, url)
        sources = plan_sources(
            _address(config.target.host, config.target.port), processes, config.streams
        )
        if processes == 1:
            config = dataclasses.replace(config, source_address=sources[0])
            state, interrupted, failures = _run_here(config, backend, progress)
        else:
            from rawsse.bench._processes import split

            configs = split(config, processes, sources)
            processes = len(configs)
            state, interrupted, failures = _run_processes(config, configs, backend, progress)
    if progress:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
    for failure in failures:
        print(f"rawsse bench: {failure}", file=sys.stderr)
    result = result_json(config, state, config.target.url())
    result["backend"] = backend
    result["interrupted"] = interrupted
    result["processes"] = processes
    result["source_addresses"] = [source for source in sources[:processes] if source]
    result["server"] = server or None
    if args.json:
        sys.stdout.write(dumps(result).decode() + "\n")
    else:
        print(format_table(result, unicode=_can_draw_blocks()))
    if args.plot:
        from rawsse.bench._plot import plot

        plot(result, args.plot)
        print(f"rawsse bench: histograms drawn to {args.plot}", file=sys.stderr)
    if interrupted:
        return 130
    return 0 if state.completed and not failures else 1


def _can_draw_blocks() -> bool:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return encoding == "utf8"
