"""One response as the load generator reads it: its head, its body's frames, its verdict.

Contract: a ``ResponseReader`` is made per request, after the request is sent, with the run's
``BenchState`` (filled as bytes arrive), the ``HeadCache`` of the run's request, the stream's
reference time ``t_ref``, whether the connection was reused, the ``terminal`` frame to expect
and, for ``--check``, a ``Checker``. Each socket read goes to ``take(data, t)`` (``t`` the
read's ``time.perf_counter()``), which returns ``True`` once the response is complete; an end
of file goes to ``eof()``. ``finish(held)`` then judges the stream and returns whether the
connection may carry another request. Failures raise ``Failed`` with one of the kinds of
``rawsse.bench._run.ERROR_KINDS``, or ``"stale"``: a reused connection that closed before a byte
of the response (the request may go again on a fresh one). Malformed framing raises
``SSEProtocolError``, a body cut short ``SSEConnectionError``.

The common case costs a few C calls per read: the head is a ``HeadCache`` hit (one ``find``,
one dict lookup), a chunked body of one single-line frame per chunk is de-chunked and counted
by ``frame_chunks`` in one pass, straight from the read (no slice after the head), and the
body's last chunk is recognised there too, so no ``ChunkedBody`` is made at all. Anything else
(a partial chunk at the end of a read, multi-line frames, CRLF line ends, extensions,
trailers, another framing) goes through ``ChunkedBody`` and ``FrameCounter``, exactly as
before, and the fast path resumes at the next read that starts at a chunk and a frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rawsse.bench._chunks import frame_chunks
from rawsse.bench._frames import FrameCounter
from rawsse.client._body import ChunkedBody
from rawsse.jsonio import JSONDecodeError, loads
from rawsse.parser import EventParser, EventTooLarge

if TYPE_CHECKING:
    from rawsse.bench._head import HeadCache, HeadParser, HeadVerdict
    from rawsse.bench._run import BenchState
    from rawsse.chat.grammar import AnthropicGrammar, OpenAIGrammar
    from rawsse.client._body import BodyDecoder
    from rawsse.sse import Event

__all__ = ["Checker", "Failed", "ResponseReader"]


class Failed(Exception):
    """One stream failed; ``kind`` is one of ``ERROR_KINDS`` (or ``"stale"``)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class Checker:
    """``check`` mode: parse every event, verify its data is JSON and, for a chat dialect,
    that the stream follows its grammar (``rawsse.chat.grammar``)."""

    __slots__ = ("events", "failure", "grammar", "in_band", "last", "parser")

    def __init__(self, dialect: str | None) -> None:
        self.parser = EventParser()
        self.events = 0
        self.in_band = 0
        self.last: tuple[str, str] | None = None  # (event type, data) of the last event
        self.failure = ""
        self.grammar: OpenAIGrammar | AnthropicGrammar | None = None
        if dialect is not None:
            from rawsse.chat.grammar import AnthropicGrammar, OpenAIGrammar

            self.grammar = OpenAIGrammar() if dialect == "openai" else AnthropicGrammar()

    def feed(self, payload: bytes) -> None:
        """Parse the next payload bytes."""
        try:
            events = self.parser.feed(payload)
        except EventTooLarge as exc:
            self.failure = self.failure or str(exc)
            return
        for event in events:
            self.events += 1
            self.last = (event.event, event.data)
            self._check_grammar(event)
            if event.event == "error":
                self.in_band += 1
                continue
            if event.data == "[DONE]":
                continue
            try:
                value = loads(event.data)
            except JSONDecodeError:
                self.failure = self.failure or f"event data is not JSON: {event.data[:80]!r}"
                continue
            if isinstance(value, dict) and "error" in value:
                self.in_band += 1

    def _check_grammar(self, event: Event) -> None:
        if self.grammar is None or self.failure:
            return
        from rawsse.chat.grammar import GrammarError

        try:
            self.grammar.feed(event)
        except GrammarError as exc:
            self.failure = str(exc)

    def finish(self) -> None:
        """The stream ended: the grammar's end-of-stream rules."""
        if self.grammar is None or self.failure:
            return
        from rawsse.chat.grammar import GrammarError

        try:
            self.grammar.end()
        except GrammarError as exc:
            self.failure = str(exc)

    def ends_with(self, marker: str) -> bool:
        """Whether the last event is the terminal one: its data or its type is ``marker``."""
        return self.last is not None and marker in self.last


class ResponseReader:
    """The reading of one response (see the module contract)."""

    __slots__ = (
        "_aligned",
        "_checker",
        "_clean",
        "_counter",
        "_decoder",
        "_heads",
        "_parser",
        "_reused",
        "_state",
        "_t_last_comment",
        "_t_last_event",
        "_t_ref",
        "_terminal",
        "_verdict",
        "payload",
        "wire",
    )

    def __init__(
        self,
        state: BenchState,
        heads: HeadCache,
        t_ref: float,
        reused: bool,
        terminal: str | None,
        checker: Checker | None,
    ) -> None:
        self._state = state
        self._heads = heads
        self._t_ref = t_ref
        self._reused = reused
        self._terminal = terminal
        self._checker = checker
        self._parser: HeadParser | None = None  # when the head was not a cache hit
        self._verdict: HeadVerdict | None = None
        self._decoder: BodyDecoder | None = None  # made when the fast path cannot go on
        self._counter = FrameCounter()
        self._aligned = False  # chunked, and the next byte starts a chunk and a frame
        self._clean = False  # the body is complete and nothing followed it
        self._t_last_event = 0.0
        self._t_last_comment = 0.0
        self.wire = 0  # bytes read, head included
        self.payload = 0  # body payload bytes (after de-chunking)

    def take(self, data: bytes, t: float) -> bool:
        """Read ``data`` (not empty); return whether the response is now complete."""
        self.wire += len(data)
        self._state.bytes += len(data)
        if self._verdict is not None:
            return self._body(data, 0, t)
        start = self._head(data, t)
        if start < 0:
            return False
        if start == len(data):  # the head came alone: the body is in later reads (if any)
            self._get_decoder()
            return self._ended()
        return self._body(data, start, t)

    def _head(self, data: bytes, t: float) -> int:
        """Feed head bytes; return where the body starts in ``data``, or -1."""
        state = self._state
        parser = self._parser
        if parser is None:
            state.ttfb_us.record(int((t - self._t_ref) * 1e6))
            found = self._heads.lookup(data)
            if found is None:
                parser = self._parser = self._heads.parser()
        if parser is not None:
            found = parser.feed(data)
            if found is None:
                return -1
        assert found is not None
        verdict, start = found
        head = verdict.head
        state.headers_us.record(int((t - self._t_ref) * 1e6))
        state.statuses[head.status] = state.statuses.get(head.status, 0) + 1
        if verdict.failure is not None:
            raise Failed(*verdict.failure)
        self._verdict = verdict
        self._aligned = verdict.chunked
        return start

    def _get_decoder(self) -> BodyDecoder:
        decoder = self._decoder
        if decoder is None:
            assert self._verdict is not None
            decoder = self._decoder = self._verdict.decoder()
        return decoder

    def _body(self, data: bytes, start: int, t: float) -> bool:
        events = comments = 0
        if self._aligned:
            taken = frame_chunks(data, start)
            if taken is not None:
                lines, start, size, ended = taken
                events, comments = self._counter.add_frames(lines)
                self.payload += size
                if self._checker is not None:
                    self._checker.feed(b"\n\n".join(lines) + b"\n\n")
                if ended:
                    self._count(events, comments, t)
                    self._clean = True
                    return True
        if start < len(data):
            more_events, more_comments = self._decode(data[start:] if start else data)
            events += more_events
            comments += more_comments
        if events or comments:
            self._count(events, comments, t)
        return self._ended()

    def _ended(self) -> bool:
        """Whether the decoder has seen the end of the body."""
        decoder = self._decoder
        if decoder is not None and decoder.done:
            self._clean = not decoder.unused
            return True
        return False

    def _decode(self, data: bytes) -> tuple[int, int]:
        """The general path: de-chunk (or delimit) ``data``, then count its frames."""
        decoder = self._get_decoder()
        counter = self._counter
        payload = decoder.feed(data)
        events = comments = 0
        if payload:
            self.payload += len(payload)
            events, comments = counter.feed(payload)
            if self._checker is not None:
                self._checker.feed(payload)
        self._aligned = (
            isinstance(decoder, ChunkedBody) and decoder.at_chunk_start and counter.at_frame_start
        )
        return events, comments

    def _count(self, events: int, comments: int, t: float) -> None:
        """Count what one read completed, and time it."""
        state = self._state
        state.events += events
        state.comments += comments
        if events > 0:
            if self._t_last_event:
                state.gap_us.record(int((t - self._t_last_event) * 1e6))
            else:
                state.first_event_us.record(int((t - self._t_ref) * 1e6))
            if events > 1:
                state.gap_us.record(0, events - 1)  # events in one read arrive together
            self._t_last_event = t
        if comments > 0:
            if self._t_last_comment:
                state.heartbeat_gap_us.record(int((t - self._t_last_comment) * 1e6))
            self._t_last_comment = t

    def eof(self) -> None:
        """The peer closed the connection before the response was complete."""
        if self._verdict is None:
            if self._reused and not self.wire:
                raise Failed("stale", "keep-alive connection was closed")
            raise Failed("disconnect", "closed before a response head arrived")
        self._get_decoder().feed_eof()  # fine for a close-delimited body, else it raises
        self._clean = False

    def close(self) -> None:
        """The reading is over, whatever its outcome: add its totals to the run's."""
        state = self._state
        state.payload_bytes += self.payload
        if self._checker is not None:
            # the parsed count is the exact one: replace the fast estimate
            state.events += self._checker.events - self._counter.events

    def finish(self, held: bool) -> bool:
        """Judge the stream (``held``: cut by the end of a hold); return whether the
        connection may carry another request."""
        if held and self._verdict is None:
            raise Failed("timeout", "no response head before the end of the hold")
        self._judge(held)
        assert self._verdict is not None
        return not held and self._clean and self._verdict.keep_alive

    def _judge(self, held: bool) -> None:
        terminal = self._terminal
        checker = self._checker
        if checker is not None:
            if checker.failure:
                raise Failed("check", checker.failure)
            if checker.in_band:
                raise Failed("in_band", "the stream carried an error frame")
            if held:
                return
            if terminal is not None and not checker.ends_with(terminal):
                raise Failed("truncated", f"the stream ended without {terminal!r}")
            checker.finish()
            if checker.failure:
                raise Failed("check", checker.failure)
            return
        counter = self._counter
        if counter.error_frames:
            raise Failed("in_band", "the stream carried an error frame")
        if held:
            return
        if terminal is not None and not counter.ends_with(terminal.encode()):
            raise Failed("truncated", f"the stream ended without {terminal!r}")
