"""A dialect: one vendor's wire format for chat, as a pure translator from deltas to frames.

Contract: a ``Dialect`` names a wire format and knows, without any I/O, how to read its requests
(``parse_request``), where its clients put the API key (``api_key``), how its errors look as a
JSON body (``error_body``, sent with ``error.status``), and how to start a ``DialectStream`` for
one generation. A ``DialectStream`` turns the neutral deltas into complete SSE frames (``bytes``),
in this life cycle::

    stream = dialect.new_stream(request, stream_id, created)   # may raise ChatError (4xx)
    frames = stream.start()                  # opening frames (optional: feed starts it too)
    for delta in backend(request):
        frames = stream.feed(delta)          # may raise ChatError 500 on a broken backend
    frames = stream.finish()                 # closing frames: finish reasons, usage, [DONE]...
    # or, on any exception after new_stream: frames = stream.fail(as_chat_error(exc))
    body = stream.response_body()            # non-streaming requests: the whole answer

Rules every stream keeps:

1. Every data frame carries an ``id:`` line with its sequence number in the stream, 1, 2, 3 ...
   (``last_event_id`` is the last one written; resume keys on it). Heartbeats carry none. A
   dialect whose SDK cannot read ``id:`` lines (Gemini) numbers its frames without writing them.
2. ``finish`` and ``fail`` end the stream: afterwards they return ``[]`` and ``feed`` raises
   ``RuntimeError``. ``fail`` writes the dialect's in-band error frame and its end of stream.
3. Frames are returned whole; a frame is never split across two returns.
4. The whole text is kept only for a non-streaming request (``response_body``), so a
   streaming one holds no more memory at its thousandth token than at its first.
5. A ``retry:`` hint (``new_stream(..., retry_ms=)``) travels in the block of the stream's first
   frame, never in a block of its own: the openai SDK's decoder dispatches a block that only set
   ``retry`` as an event with empty data and fails to parse it. A dialect whose SDKs read every
   line that is not ``data:`` as JSON (Gemini) carries no hint at all (``carries_retry``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rawsse.chat.auth import presented_key
from rawsse.chat.deltas import Citations, Delta, Finish, ReasoningDelta, TextDelta, ToolCallDelta
from rawsse.chat.deltas import Usage as UsageDelta
from rawsse.chat.errors import ChatError
from rawsse.chat.request import ChatRequest
from rawsse.chat.transcript import ChoiceState, ToolCallState, Transcript
from rawsse.sse import encode_event, encode_json_data, encode_retry

__all__ = ["COMMENT_HEARTBEAT", "SSE_CONTENT_TYPE", "Dialect", "DialectStream"]

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"

# The chat heartbeat: a comment line with NO blank line after it. The openai SDK's decoder (like
# httpx-sse's, which it copies) dispatches an event at every blank line once an ``id:`` was
# seen, so ``:\n\n`` would reach it as an empty event and break its ``json.loads``. A lone
# comment line is ignored by every parser, conformant or not, and still keeps proxies awake.
COMMENT_HEARTBEAT = b":\n"


class DialectStream:
    """The frames of one generation in one dialect; subclasses write the vendor's shapes.

    Subclasses implement the ``_on_*`` hooks, ``_finish``, ``_fail`` and ``_response_body``;
    this class keeps the life cycle, the transcript and the frame numbering.
    """

    event_ids: ClassVar[bool] = True
    """Whether frames carry their ``id:`` line (see rule 1 of the module docstring)."""

    keeps_text: ClassVar[bool] = False
    """Whether the stream's own frames need the whole text so far (else only a non-streaming
    request keeps it; see ``Transcript``)."""

    carries_retry: ClassVar[bool] = True
    """Whether the first frame may carry a ``retry:`` hint (rule 5 of the module docstring);
    a dialect that says yes must open with at least one frame (``_start``)."""

    keeps_request: ClassVar[bool] = True
    """Whether ``request`` stays the whole request for the stream's life. rawsse's own
    dialects say no: their frames use only the model, ``n``, ``stream``, ``include_usage``
    and ``max_tokens``, so ``request`` becomes a copy with only those (shared by the streams
    that have the same), and a held stream does not keep the parsed messages (the model got
    them)."""

    __slots__ = (
        "_ended",
        "_started",
        "created",
        "last_event_id",
        "request",
        "retry_ms",
        "stream_id",
        "transcript",
    )

    def __init__(self, request: ChatRequest, stream_id: str, created: int) -> None:
        keep_text = self.keeps_text or not request.stream
        self.transcript = Transcript(request, keep_text=keep_text)
        self.request = request if self.keeps_request else _essentials(request)
        self.stream_id = stream_id
        self.created = created
        self.last_event_id = 0
        # The reconnection hint for the first frame's block (set by ``Dialect.new_stream``).
        self.retry_ms: int | None = None
        self._started = False
        self._ended = False

    @property
    def ended(self) -> bool:
        """True once ``finish`` or ``fail`` ran."""
        return self._ended

    # -- framing ---------------------------------------------------------------------------

    def _next_id(self) -> str | None:
        self.last_event_id += 1
        return str(self.last_event_id) if self.event_ids else None

    def _json(self, value: Any, event: str | None = None) -> bytes:
        """One numbered frame whose data is ``value`` as JSON."""
        return encode_json_data(value, id=self._next_id(), event=event)

    def _data(self, data: str, event: str | None = None) -> bytes:
        """One numbered frame whose data is the text ``data`` (``[DONE]``)."""
        return encode_event(data, event=event, id=self._next_id())

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> list[bytes]:
        """The stream's opening frames (``[]`` if already started or ended)."""
        if self._started or self._ended:
            return []
        self._started = True
        frames = self._start()
        if self.retry_ms is not None and frames:
            # The hint's line without the blank line that would end a block of its own.
            frames[0] = encode_retry(self.retry_ms)[:-1] + frames[0]
        return frames

    def feed(self, item: str | Delta) -> list[bytes]:
        """The frames for one delta (a ``str`` is answer text for choice 0)."""
        if self._ended:
            raise RuntimeError("feed() after the stream ended")
        frames = [] if self._started else self.start()
        transcript = self.transcript
        if isinstance(item, str):  # the hot path: plain text for choice 0
            state = transcript.choice(0)
            frames += self._on_text(state, item, transcript.add_text(state, "text", item))
        elif isinstance(item, TextDelta):
            state = transcript.choice(item.choice)
            frames += self._on_text(state, item.text, transcript.add_text(state, "text", item.text))
        elif isinstance(item, ReasoningDelta):
            state = transcript.choice(item.choice)
            new_block = transcript.add_text(state, "reasoning", item.text)
            frames += self._on_reasoning(state, item.text, new_block)
        elif isinstance(item, ToolCallDelta):
            state = transcript.choice(item.choice)
            call, first = transcript.add_tool_fragment(
                state, item.index, item.id, item.name, item.arguments, self._tool_id
            )
            frames += self._on_tool(state, call, first, item.arguments)
        elif isinstance(item, Finish):
            state = transcript.choice(item.choice)
            transcript.set_finish(state, item.reason)
            frames += self._on_finish(state)
        elif isinstance(item, Citations):
            transcript.citations = item.urls
            frames += self._on_citations()
        elif isinstance(item, UsageDelta):
            transcript.set_usage(item)
        else:
            raise ChatError.server_error(
                "The model backend broke the delta protocol: it yielded a "
                f"{type(item).__name__}, not a str or a delta."
            )
        return frames

    def finish(self) -> list[bytes]:
        """The closing frames after the backend ended normally (``[]`` once ended).

        Choices the backend did not finish get ``tool_calls`` if they called tools, else
        ``stop``. May raise ``ChatError`` 500 if what was fed cannot be expressed (the stream
        is then still open, for ``fail``).
        """
        if self._ended:
            return []
        frames = [] if self._started else self.start()
        frames += self._finish()
        self._ended = True
        return frames

    def fail(self, error: ChatError) -> list[bytes]:
        """The dialect's in-band error frame for ``error`` and its end (``[]`` once ended)."""
        if self._ended:
            return []
        self._ended = True
        return self._fail(error)

    def response_body(self) -> dict[str, Any]:
        """The non-streaming answer built from everything fed (a request with ``stream``
        false; a streaming one does not keep its text, and this raises ``RuntimeError``)."""
        if not self.transcript.keep_text:
            raise RuntimeError("response_body() needs a non-streaming request: text not kept")
        return self._response_body()

    # -- hooks -----------------------------------------------------------------------------

    def _tool_id(self, choice: int, index: int) -> str:
        """An id for a tool call whose backend gave none."""
        return f"call_{self.stream_id}_{choice}_{index}"

    def _start(self) -> list[bytes]:
        return []

    def _on_text(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        raise NotImplementedError

    def _on_reasoning(self, state: ChoiceState, text: str, new_block: bool) -> list[bytes]:
        raise NotImplementedError

    def _on_tool(
        self, state: ChoiceState, call: ToolCallState, first: bool, arguments: str
    ) -> list[bytes]:
        raise NotImplementedError

    def _on_finish(self, state: ChoiceState) -> list[bytes]:
        return []

    def _on_citations(self) -> list[bytes]:
        return []

    def _finish(self) -> list[bytes]:
        raise NotImplementedError

    def _fail(self, error: ChatError) -> list[bytes]:
        raise NotImplementedError

    def _response_body(self) -> dict[str, Any]:
        raise NotImplementedError


# Requests reduced to what rawsse's dialects' frames use, shared by the streams alike.
_ESSENTIALS: dict[tuple[Any, ...], ChatRequest] = {}
_MAX_ESSENTIALS = 1024


def _essentials(request: ChatRequest) -> ChatRequest:
    """``request`` with only the fields rawsse's dialects use once streaming (see
    ``DialectStream.keeps_request``): one shared copy per distinct set of values."""
    key = (
        request.model,
        request.dialect,
        request.stream,
        request.include_usage,
        request.max_tokens,
        request.n,
    )
    kept = _ESSENTIALS.get(key)
    if kept is None:
        if len(_ESSENTIALS) >= _MAX_ESSENTIALS:
            _ESSENTIALS.clear()
        kept = _ESSENTIALS[key] = ChatRequest(
            model=request.model,
            messages=(),
            dialect=request.dialect,
            stream=request.stream,
            include_usage=request.include_usage,
            max_tokens=request.max_tokens,
            n=request.n,
        )
    return kept


RequestParser = Callable[[Any, str | None, bool | None], ChatRequest]


@dataclass(frozen=True, slots=True)
class Dialect:
    """One vendor's wire format: request parsing, key lookup, error bodies, streams.

    ``key_header`` is the vendor's own key header (lower-case; ``Authorization: Bearer`` is
    always accepted too) and ``key_query`` a query parameter that may carry the key.
    """

    name: str
    stream_type: type[DialectStream]
    parser: RequestParser
    error_renderer: Callable[[ChatError], dict[str, Any]]
    heartbeat_frame: bytes = COMMENT_HEARTBEAT
    content_type: str = SSE_CONTENT_TYPE
    key_header: str | None = None
    key_query: str | None = None

    def parse_request(
        self, body: Any, *, model: str | None = None, stream: bool | None = None
    ) -> ChatRequest:
        """Validate a decoded JSON body; ``model`` and ``stream`` come from the URL for
        dialects that put them there (Gemini). Raises ``ChatError`` 400."""
        return self.parser(body, model, stream)

    def new_stream(
        self, request: ChatRequest, stream_id: str, created: int, *, retry_ms: int | None = None
    ) -> DialectStream:
        """Start the frames of one generation. ``stream_id`` is an opaque token of letters,
        digits, ``_`` and ``-`` that makes the vendor ids (``chatcmpl-{stream_id}``);
        ``created`` is the Unix time in seconds; ``retry_ms`` a reconnection hint for the
        first frame, dropped by a dialect that cannot carry one. Raises ``ChatError`` 400 when
        this dialect cannot express the request (``n > 1`` where it has no choices)."""
        stream = self.stream_type(request, stream_id, created)
        if retry_ms is not None and stream.carries_retry:
            encode_retry(retry_ms)  # validate now, not at the first frame
            stream.retry_ms = retry_ms
        return stream

    def error_body(self, error: ChatError) -> dict[str, Any]:
        """``error`` as this vendor's JSON error body (send it with ``error.status``)."""
        return self.error_renderer(error)

    def api_key(
        self, headers: Mapping[str, str], query: Mapping[str, str] | None = None
    ) -> str | None:
        """The API key the request presents, where this vendor's clients put it."""
        return presented_key(headers, query, header=self.key_header, query_param=self.key_query)
