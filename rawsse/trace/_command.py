"""``rawsse trace URL``: the wire inspector. One request, every byte and event shown as it arrives.

Contract: ``add_arguments(parser)`` declares the options and ``run(args)`` performs one request
with rawsse's client, printing (``rawsse.trace._format``) the request sent, each socket read with
its offset in milliseconds since the request was written and its size, the response head, the
chunked framing (every chunk-size line, data piece with h11-style start/end markers, and the
last chunk with its trailers), each parsed event with its fields, and a summary: time to
headers, to the first event, gaps between events, bytes on the wire against payload and event
data. Exit status: 0 when the body ended cleanly (or ``--max-events`` were seen), 1 on a
connection error, a timeout or a validation failure, 2 for an unusable command line, 130 after
Ctrl-C (the summary is still printed).

Any status and content type is shown rather than refused: inspecting a 401 or a JSON error body
is part of the job.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from rawsse.cli._chat_request import ANTHROPIC_VERSION, chat_request, request_format
from rawsse.client import SSEError, connect
from rawsse.client._exchange import ResponseHead, Target, head_end
from rawsse.client._wire import (
    BodyData,
    BodyEnd,
    ChunkData,
    ChunkHeader,
    Received,
    Sent,
    WireRecord,
)
from rawsse.jsonio import JSONDecodeError, dumps, loads
from rawsse.parser import EventParser, EventTooLarge
from rawsse.sse import Event
from rawsse.trace._format import JsonSink, TextSink, TraceSink

__all__ = ["add_arguments", "run"]

_CHAT_PATH = "/v1/chat/completions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``rawsse trace``'s options on ``parser``."""
    parser.add_argument("url", help="the URL to request (http:// or https://)")
    parser.add_argument(
        "--chat",
        metavar="TEXT",
        help="send a streaming chat request with TEXT as the user message, in the format of "
        f"the URL's path (path {_CHAT_PATH} when the URL has none; default: no chat request)",
    )
    parser.add_argument("--model", default="echo", help="model for --chat (default echo)")
    parser.add_argument(
        "--max-tokens", type=int, help="max_tokens for --chat (default: the model's own)"
    )
    parser.add_argument(
        "--data", metavar="JSON", help="request body (JSON); implies POST (default: none)"
    )
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header (repeatable; default: none)",
    )
    parser.add_argument("-X", "--method", help="HTTP method (default GET, POST with a body)")
    parser.add_argument(
        "--last-event-id", default="", help="send this Last-Event-ID (default: none)"
    )
    parser.add_argument("--raw", action="store_true", help="show every read's bytes, escaped")
    parser.add_argument("--json", action="store_true", help="one JSON record per line")
    parser.add_argument(
        "--validate",
        choices=("openai", "anthropic"),
        help="check the events against that vendor's stream grammar (default: no check)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="give up after S seconds (default 30)",
    )
    parser.add_argument(
        "--max-events", type=int, help="stop after N events (default: at the body's end)"
    )
    parser.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help="event loop"
    )


Validator = Callable[[Event], str | None]


@dataclass
class _Recorder:
    """Turns wire records into sink calls, and keeps the figures for the summary."""

    sink: TraceSink
    t0: float = 0.0
    last_t: float = 0.0
    reads: int = 0
    wire_bytes: int = 0
    prefix: bytes = b""  # received bytes until the head's end is known
    head_bytes: int | None = None
    chunked_payload: int = 0
    chunks: int = 0
    chunked: bool = False
    event_times: list[float] = field(default_factory=list)
    data_bytes: int = 0
    t_head: float | None = None
    max_events: int | None = None
    validate: Validator | None = None
    stopped: bool = False
    invalid: bool = False
    is_sse: bool = True
    parser: EventParser = field(default_factory=EventParser)

    def ms(self, t: float) -> float:
        return (t - self.t0) * 1000

    def hook(self, t: float, record: WireRecord) -> None:
        if isinstance(record, Sent):
            self.t0 = t
            self.sink.request(0.0, record.data)
        elif isinstance(record, Received):
            self.reads += 1
            self.wire_bytes += len(record.data)
            self.last_t = t
            if self.head_bytes is None:
                self.prefix += record.data
            self.sink.read(self.ms(t), self.reads, record.data)
        elif isinstance(record, BodyData):
            self.sink.framing(self.ms(t), record)
            self._parse(record.data)
        else:
            if isinstance(record, ChunkHeader):
                self.chunked = True
                self.chunks += record.size > 0
            elif isinstance(record, ChunkData):
                self.chunked_payload += record.size
            elif isinstance(record, BodyEnd) and not self.chunked:
                return  # nothing to show for a length- or close-delimited body's end
            self.sink.framing(self.ms(t), record)
            if isinstance(record, ChunkData):
                self._parse(record.data)

    def _parse(self, data: bytes) -> None:
        # The trace parses each piece as it is shown, so an event appears right after the
        # chunk that completed it. (The client parses the same bytes; its events are not shown.)
        if not self.is_sse:
            self.sink.note(self.ms(self.last_t), "body", data.decode("utf-8", "replace"))
            return
        if self.stopped:
            return
        try:
            events = self.parser.feed(data)
        except EventTooLarge:
            return  # the client raises the same error, reported as the end of the trace
        for event in events:
            self.event(event)
            if self.max_events is not None and len(self.event_times) >= self.max_events:
                self.stopped = True
                return

    def head(self, head: ResponseHead) -> None:
        self.t_head = self.last_t
        self.is_sse = head.media_type == "text/event-stream"
        end = head_end(self.prefix)
        self.head_bytes = end if end >= 0 else len(self.prefix)
        self.prefix = b""
        self.sink.head(self.ms(self.last_t), head)

    def event(self, event: Event) -> None:
        self.event_times.append(self.last_t)
        self.data_bytes += len(event.data.encode())
        self.sink.event(self.ms(self.last_t), len(self.event_times), event)
        problem = self.validate(event) if self.validate is not None else None
        if problem:
            self.invalid = True
            self.sink.note(self.ms(self.last_t), "invalid", problem)

    def summary(self, status: int | None, end: str, t_end: float) -> dict[str, Any]:
        gaps = sorted(
            (b - a) * 1000 for a, b in zip(self.event_times, self.event_times[1:], strict=False)
        )
        head = self.head_bytes or 0
        payload = self.chunked_payload if self.chunked else self.wire_bytes - head
        return {
            "status": status,
            "headers_ms": None if self.t_head is None else round(self.ms(self.t_head), 3),
            "first_event_ms": round(self.ms(self.event_times[0]), 3) if self.event_times else None,
            "total_ms": round(self.ms(t_end), 3),
            "events": len(self.event_times),
            "gaps_ms": {
                "min": round(gaps[0], 3) if gaps else None,
                "p50": round(gaps[len(gaps) // 2], 3) if gaps else None,
                "max": round(gaps[-1], 3) if gaps else None,
            },
            "reads": self.reads,
            "chunks": self.chunks,
            "wire_bytes": self.wire_bytes,
            "head_bytes": head,
            "framing_bytes": self.wire_bytes - head - payload,
            "payload_bytes": payload,
            "data_bytes": self.data_bytes,
            "data_ratio": self.data_bytes / self.wire_bytes if self.wire_bytes else 0.0,
            "end": end,
        }


def _validator(dialect: str | None) -> tuple[Validator | None, Callable[[], str | None] | None]:
    """``--validate``: per-event and end-of-stream checks with the chat layer's grammars.

    Each returns the first violation's message (then stays quiet: after a violation the
    grammar's state says nothing more of use), or ``None``.
    """
    if dialect is None:
        return None, None
    from rawsse.chat.grammar import AnthropicGrammar, GrammarError, OpenAIGrammar

    grammar = OpenAIGrammar() if dialect == "openai" else AnthropicGrammar()
    failed = False

    def feed(event: Event) -> str | None:
        nonlocal failed
        if not failed:
            try:
                grammar.feed(event)
            except GrammarError as exc:
                failed = True
                return str(exc)
        return None

    def finish() -> str | None:
        nonlocal failed
        if not failed:
            try:
                grammar.end()
            except GrammarError as exc:
                failed = True
                return str(exc)
        return None

    return feed, finish


@dataclass(frozen=True, slots=True)
class _Request:
    url: str
    method: str | None
    headers: list[tuple[str, str]]
    body: bytes | None


def _build_request(args: argparse.Namespace) -> _Request:
    target = Target.from_url(args.url)
    headers = []
    for value in args.header:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header must look like 'Name: value': {value!r}")
        headers.append((name.strip(), rest.strip()))
    if args.chat is not None and args.data is not None:
        raise ValueError("give --chat or --data, not both")
    body: bytes | None = None
    url = args.url
    if args.chat is not None:
        if target.path in ("", "/"):
            url = target.url(_CHAT_PATH)
            target = Target.from_url(url)
        # Any other path takes OpenAI's request (as a proxy in front of one would).
        body = chat_request(target.path, args.model, args.chat, args.max_tokens) or chat_request(
            _CHAT_PATH, args.model, args.chat, args.max_tokens
        )
    elif args.data is not None:
        try:
            body = dumps(loads(args.data))
        except JSONDecodeError as exc:
            raise ValueError(f"--data is not JSON: {exc}") from exc
    names = {name.lower() for name, _ in headers}
    if body is not None and "content-type" not in names:
        headers.append(("Content-Type", "application/json"))
    anthropic = request_format(target.path) == "anthropic"
    if args.chat is not None and anthropic and "anthropic-version" not in names:
        headers.append(("anthropic-version", ANTHROPIC_VERSION))
    return _Request(url, args.method, headers, body)


async def _trace(args: argparse.Namespace, request: _Request, sink: TraceSink) -> int:
    """Trace one request; returns the exit status (see the module contract)."""
    feed, finish = _validator(args.validate)
    recorder = _Recorder(sink, max_events=args.max_events, validate=feed)
    status: int | None = None
    end = "body end"
    code = 0
    interrupted = False
    async with anyio.create_task_group() as tg:

        async def stop_on_sigint(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            # Ctrl-C (how an endless stream is usually left) still gets its summary.
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                task_status.started()
                async for _ in signals:
                    interrupted = True
                    tg.cancel_scope.cancel()

        # Started before the request: a Ctrl-C once anything is shown is always caught.
        await tg.start(stop_on_sigint)
        with anyio.move_on_after(args.timeout) as timeout:
            try:
                async with connect(
                    request.url,
                    method=request.method,
                    body=request.body,
                    headers=request.headers,
                    last_event_id=args.last_event_id,
                    hook=recorder.hook,
                    check=False,
                ) as response:
                    status = response.status
                    recorder.head(response.head)
                    async for _ in response:  # the recorder shows events as the bytes arrive
                        if recorder.stopped:
                            end = f"stopped after {args.max_events} events"
                            break
                    else:
                        problem = finish() if finish is not None else None
                        if problem:
                            recorder.invalid = True
                            sink.note(recorder.ms(recorder.last_t), "invalid", problem)
            except SSEError as exc:
                code = 1
                end = f"error: {exc}"
                t_ms = recorder.ms(recorder.last_t) if recorder.t0 else 0.0
                sink.note(t_ms, "error", str(exc))
        tg.cancel_scope.cancel()
    if timeout.cancelled_caught:
        code = 1
        end = f"timed out after {args.timeout} s"
    if interrupted:
        code = 130
        end = "interrupted (Ctrl-C)"
    t_end = max(recorder.last_t, recorder.t0)
    sink.summary(recorder.summary(status, end, t_end))
    return code or (1 if recorder.invalid else 0)


def run(args: argparse.Namespace) -> int:
    """Run ``rawsse trace`` with parsed ``args``; returns the exit status."""
    try:
        request = _build_request(args)
    except ValueError as exc:
        print(f"rawsse trace: {exc}", file=sys.stderr)
        return 2
    sink: TraceSink = (
        JsonSink(sys.stdout, raw=args.raw) if args.json else TextSink(sys.stdout, raw=args.raw)
    )
    status: int = anyio.run(_trace, args, request, sink, backend=args.backend)
    return status
