"""Mounting model backends on an App, behind every dialect's endpoints.

Contract: ``mount_chat(app, models, ...)`` adds the chat routes (table below) for a mapping of
model name to ``ModelBackend``. For each request it authenticates (constant-time key check),
validates the body with the dialect's parser, finds the model, and either answers the whole
completion as JSON or streams the dialect's frames through an ``EventStream``. It never writes a
socket itself. Every error a client can cause is answered in the vendor's error shape and status.

Streaming runs in one of two modes:

1. *Inline* (the default): the backend runs inside the response. A client that leaves cancels
   it at once (its generator is closed), and the frames it produced, plus the dialect's error
   frame saying the stream was cancelled, stay in the replay store for the resume route.
2. *Background* (``resume_grace_s > 0`` or ``status_commit_s``): the backend runs as a server
   task writing into the replay store, and each client (the first, and any that resume) follows
   the store. When the last client leaves, the producer gets ``resume_grace_s`` more seconds
   before it is cancelled. With ``status_commit_s`` the response head waits for the backend's
   first delta (up to that long), so an early failure still gets a real HTTP status.

With API keys configured, every stream's response carries ``x-rawsse-resume-token``: the resume
route accepts it as ``?resume_token=`` for that stream alone, so a browser's ``EventSource``
(which cannot send headers) resumes without a key in its URL (``rawsse.chat.auth``).
``ChatService.end_resumes(id)`` ends the resume responses following a stream, as a restart or
a proxy timeout would: their clients reconnect with ``Last-Event-ID``.

Routes::

    POST /v1/chat/completions                    OpenAI (streaming and not)
    GET  /v1/chat/completions/{id}/events        resume a stream after Last-Event-ID (204: all seen)
    GET  /v1/models, /v1/models/{model}          OpenAI model list / model
    POST /v1/messages                            Anthropic
    POST /v1beta/models/{model}:streamGenerateContent   Gemini (also under /v1/)
    POST /v1beta/models/{model}:generateContent          Gemini, not streaming
    POST /backend-api/conversation               ChatGPT-web ``event: delta`` format
    POST /v1/envelope/completions                the generic envelope format
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

import anyio
import anyio.lowlevel

from rawsse._errors import ClientDisconnected
from rawsse.app import App
from rawsse.chat.auth import (
    check_api_key,
    check_resume_token,
    checked_keys,
    resume_secret,
    resume_token,
)
from rawsse.chat.deltas import ModelBackend
from rawsse.chat.demo import PacedAnswer, pause
from rawsse.chat.dialect import Dialect, DialectStream
from rawsse.chat.errors import ChatError, as_chat_error
from rawsse.chat.request import ChatRequest
from rawsse.jsonio import loads
from rawsse.replay import (
    MemoryReplayStore,
    ProducerLost,
    ReplayGap,
    ReplayStore,
    StoreUnavailable,
)
from rawsse.request import Request
from rawsse.response import JSONResponse, Response
from rawsse.stream import _SSE_HEADER_BYTES, EventStream, StreamEnd, _sse_headers_with

__all__ = ["ChatService", "mount_chat"]

logger = logging.getLogger("rawsse.chat")

Deltas = AsyncIterator[Any]

# Prefixes of the ids clients see (chatcmpl-..., msg_...), stripped to find the stream.
_ID_PREFIXES = ("chatcmpl-", "msg_", "resp_")
# A backend gets this long to run its cleanup when its stream is cancelled.
_ACLOSE_TIMEOUT_S = 5.0


def _cancelled_error(grace_s: float) -> ChatError:
    """The error ending a stream whose clients all left (and did not come back in time)."""
    if grace_s > 0:
        why = f"its last client left and none came back within the resume grace ({grace_s:g} s)"
    else:
        why = "its client disconnected and no resume grace was configured"
    return ChatError(
        500,
        f"The stream was cancelled before it finished: {why}, so generation stopped.",
        code="stream_cancelled",
    )


# What a resumed client is told when the store cannot give it the whole stream.
_PRODUCER_LOST = ChatError(
    500,
    "The server generating this stream stopped before the stream finished; it ends here.",
    code="stream_producer_lost",
)
_REPLAY_GAP = ChatError(
    500,
    "Part of this stream is no longer kept (trimmed, expired, or lost by the shared store), "
    "so it cannot be replayed without a hole; send the request again.",
    code="replay_gap",
)
_REPLAY_UNAVAILABLE = ChatError(
    503,
    "This stream's history is unavailable right now: the shared replay store does not "
    "answer. Retry shortly.",
    code="replay_unavailable",
)
# Set in the processes of ``rawsse serve --workers N`` (see rawsse.cli._workers).
_WORKER_ENV = "RAWSSE_WORKER"


def _stopped_error(reason: StreamEnd | None, grace_s: float = 0.0) -> ChatError:
    """Why a stream the model did not finish ended, for its in-band error frame (``grace_s``:
    the resume grace its producer had once its clients left)."""
    if reason == "lifetime":
        return ChatError(
            504,
            "The stream reached its maximum lifetime before the model finished: the answer "
            "is incomplete.",
            code="stream_lifetime_exceeded",
        )
    if reason in (None, "disconnected", "evicted"):
        return _cancelled_error(grace_s)  # the client left: nobody reads this but a resume
    return ChatError(
        503,
        "The server is shutting down: the stream ended before the model finished, so the "
        "answer is incomplete.",
        code="server_shutting_down",
    )


class _Generation:
    """A background producer and the clients following it (background mode)."""

    __slots__ = ("dialect", "first", "followers", "grace_s", "scope", "stopped", "watching")

    def __init__(self, dialect: Dialect, grace_s: float) -> None:
        self.dialect = dialect
        self.grace_s = grace_s
        self.followers = 0
        self.watching = False  # a task asks the store about followers in other processes
        self.scope = anyio.CancelScope(deadline=anyio.current_time() + max(grace_s, 1.0))
        # Set once the backend produced its first delta, ended or failed (status commit).
        self.first = anyio.Event()
        # Why the server stopped the producer (None: it ran out of followers and grace).
        self.stopped: StreamEnd | None = None

    def attach(self) -> None:
        self.followers += 1
        self.scope.deadline = math.inf

    def detach(self) -> None:
        self.followers -= 1
        if self.followers <= 0:
            self.scope.deadline = anyio.current_time() + self.grace_s

    def stop(self, reason: StreamEnd) -> None:
        """Cancel the producer now; it ends the stream with the dialect's error frame."""
        if self.stopped is None:
            self.stopped = reason
        self.scope.cancel()


class _Follower(EventStream):
    """A client following a stream through the replay store (background mode and resume).

    A server shutdown does not cut it: it stops the stream's producer, which ends the stream
    with the dialect's error frame (in the store, with its id), and follows the stream to that
    end (the server's shutdown grace bounds the wait). Following a stream with no producer in
    this process, it ends as any stream does.
    """

    __slots__ = ("generation",)

    def __init__(
        self,
        source: AsyncIterator[bytes] | Callable[[EventStream], Awaitable[None]],
        generation: _Generation | None,
        **options: Any,
    ) -> None:
        super().__init__(source, **options)
        self.generation = generation

    def on_server_shutdown(self) -> None:
        """Stop the producer and follow the stream to its error frame (see the class)."""
        if self.generation is None:
            super().on_server_shutdown()
        else:
            self.generation.stop("shutdown")


class ChatService:
    """The chat routes of one App; created by ``mount_chat``."""

    def __init__(
        self,
        app: App,
        models: Mapping[str, ModelBackend],
        *,
        api_keys: Collection[str] = (),
        replay_store: ReplayStore | None = None,
        resume_grace_s: float = 0.0,
        status_commit_s: float | None = None,
    ) -> None:
        if resume_grace_s < 0:
            raise ValueError("resume_grace_s must be >= 0")
        self.app = app
        self.models = dict(models)
        self.api_keys = checked_keys(api_keys)
        # "is None", not "or": an empty store is falsy (it has a length) but is still the one.
        self.store: ReplayStore = replay_store if replay_store is not None else MemoryReplayStore()
        self.resume_grace_s = resume_grace_s
        self.status_commit_s = status_commit_s
        self.created = int(time.time())
        self._second = self.created  # the last _now_s(), one int object per second
        self._generations: dict[str, _Generation] = {}
        self._resume_secret = resume_secret(self.api_keys)
        # The resume responses running now, by stream id (for end_resumes).
        self._resumes: dict[str, set[EventStream]] = {}
        # The dialects mounted, by name: a stream resumed in another process names its own.
        self.dialects: dict[str, Dialect] = {}

    def _now_s(self) -> int:
        """The Unix time in seconds: within a second, the same int object (a held stream
        keeps its ``created``)."""
        now = int(time.time())
        if now != self._second:
            self._second = now
        return self._second

    # -- shared steps ----------------------------------------------------------------------

    @staticmethod
    def _error(dialect: Dialect, error: ChatError) -> Response:
        headers = [("www-authenticate", "Bearer")] if error.status == 401 else []
        return JSONResponse(dialect.error_body(error), error.status, headers)

    def _authenticate(self, dialect: Dialect, request: Request) -> None:
        if not self.api_keys:
            return
        presented = dialect.api_key(request.headers, request.query)
        if not check_api_key(self.api_keys, presented):
            raise ChatError.unauthorized(presented is not None)

    @staticmethod
    def _json_body(request: Request) -> Any:
        try:
            return loads(request.body)
        except ValueError as exc:
            raise ChatError.invalid(
                f"We could not parse the JSON body of your request: {exc}"
            ) from exc

    def _backend(self, chat_request: ChatRequest) -> ModelBackend:
        backend = self.models.get(chat_request.model)
        if backend is None:
            raise ChatError.model_not_found(chat_request.model)
        return backend

    async def handle(
        self,
        dialect: Dialect,
        request: Request,
        *,
        model: str | None = None,
        stream: bool | None = None,
    ) -> Response | EventStream:
        """Answer one chat request in ``dialect``."""
        try:
            self._authenticate(dialect, request)
            if dialect.name == "anthropic" and "anthropic-version" not in request.headers:
                raise ChatError.invalid("anthropic-version: header is required")
            _check_content_type(request)
            chat_request = dialect.parse_request(
                self._json_body(request), model=model, stream=stream
            )
            if stream is not None and chat_request.stream != stream:
                # The route decides (Gemini's two verbs, the streaming-only formats).
                chat_request = dataclasses.replace(chat_request, stream=stream)
            backend = self._backend(chat_request)
            stream_id = secrets.token_urlsafe(18)
            frames = dialect.new_stream(
                chat_request,
                stream_id,
                self._now_s(),
                # The server's ``--retry-ms``, carried the dialect's way (never a lone block).
                retry_ms=EventStream.default_retry_ms,
            )
            # Backends may check the request when called (the demo models' options): a
            # ChatError here is still a real HTTP status.
            deltas = backend(chat_request)
        except ChatError as error:
            return self._error(dialect, error)
        if not chat_request.stream:
            return await self._complete(dialect, frames, deltas, chat_request)
        if self.resume_grace_s > 0 or self.status_commit_s:
            return await self._stream_background(dialect, frames, deltas, chat_request, stream_id)
        return _InlineStream(self, dialect, frames, deltas, stream_id)

    # -- non-streaming ---------------------------------------------------------------------

    async def _complete(
        self, dialect: Dialect, frames: DialectStream, deltas: Deltas, req: ChatRequest
    ) -> Response:
        try:
            count = 0
            async for delta in deltas:
                frames.feed(delta)
                count += 1
                if count % 256 == 0:
                    # No socket to push back here: yield now and then so one long answer
                    # does not hold everyone else up.
                    await anyio.lowlevel.checkpoint()
            frames.finish()
            body = frames.response_body()
        except Exception as exc:
            if not isinstance(exc, ChatError):
                logger.exception("model %r failed", req.model)
            return self._error(dialect, as_chat_error(exc))
        finally:
            await _close(deltas)
        return JSONResponse(body)

    # -- streaming, background -------------------------------------------------------------

    async def _stream_background(
        self,
        dialect: Dialect,
        frames: DialectStream,
        deltas: Deltas,
        req: ChatRequest,
        stream_id: str,
    ) -> Response | EventStream:
        server = self.app.server
        if server is None:
            raise RuntimeError("background chat streams need the App to be served by a Server")
        generation = _Generation(dialect, self.resume_grace_s)
        self._generations[stream_id] = generation
        await self.store.create(stream_id, tag=dialect.name)
        failure: list[ChatError] = []
        server.spawn(self._produce_background, generation, frames, deltas, req, stream_id, failure)
        if self.status_commit_s:
            with anyio.move_on_after(self.status_commit_s):
                await generation.first.wait()
            if failure:
                # Failed before its first delta: the client still gets a real status.
                return self._error(dialect, failure[0])
        return _Follower(
            self._follow(generation, dialect, stream_id, None),
            generation,
            heartbeat=dialect.heartbeat_frame,
            headers=self._stream_headers(stream_id),
            retry_ms="off",  # the dialect carries it in its first frame
        )

    async def _produce_background(
        self,
        generation: _Generation,
        frames: DialectStream,
        deltas: Deltas,
        req: ChatRequest,
        stream_id: str,
        failure: list[ChatError],
    ) -> None:
        store = self.store
        try:
            with generation.scope:
                await _record(store, stream_id, frames, frames.start())
                started = False
                try:
                    async for delta in deltas:
                        if not started:
                            started = True
                            generation.first.set()
                        await _record(store, stream_id, frames, frames.feed(delta))
                    await _record(store, stream_id, frames, frames.finish())
                except Exception as exc:
                    if not isinstance(exc, ChatError):
                        logger.exception("model %r failed mid-stream", req.model)
                    error = as_chat_error(exc)
                    if not started:
                        failure.append(error)
                    await _record(store, stream_id, frames, frames.fail(error))
        finally:
            generation.first.set()
            with anyio.CancelScope(shield=True):
                await _close(deltas)
                if not frames.ended:
                    error = _stopped_error(generation.stopped, generation.grace_s)
                    await _record(store, stream_id, frames, frames.fail(error), wait=False)
                await store.finish(stream_id)
            self._generations.pop(stream_id, None)

    async def _follow(
        self,
        generation: _Generation | None,
        dialect: Dialect,
        stream_id: str,
        last_id: str | None,
    ) -> AsyncIterator[bytes]:
        if generation is not None:
            generation.attach()
        abandoned = False
        try:
            while True:
                frames = self.store.follow(stream_id, last_id)
                try:
                    async for frame in frames:
                        yield frame
                    return
                except ProducerLost as lost:
                    if abandoned:  # ended it once already, yet it does not end: give up
                        for frame in _unnumbered(dialect, stream_id, _PRODUCER_LOST):
                            yield frame
                        return
                    # End the stream in the store with the dialect's error, for every
                    # follower at once, then follow it to that end.
                    abandoned = True
                    tail = _tail(dialect, stream_id, lost.last_id, _PRODUCER_LOST)
                    await self.store.abandon(stream_id, lost.last_id, tail)
                    last_id = lost.last_id
                finally:
                    # Close the store's iterator now, not whenever the garbage collector does.
                    aclose = getattr(frames, "aclose", None)
                    if aclose is not None:
                        with anyio.CancelScope(shield=True):
                            await aclose()
        except ReplayGap:
            for frame in _unnumbered(dialect, stream_id, _REPLAY_GAP):
                yield frame
        except StoreUnavailable:
            for frame in _unnumbered(dialect, stream_id, _REPLAY_UNAVAILABLE):
                yield frame
        finally:
            if generation is not None:
                generation.detach()
                if generation.followers <= 0:
                    self._watch_followers_elsewhere(generation, stream_id)

    def _watch_followers_elsewhere(self, generation: _Generation, stream_id: str) -> None:
        # A shared store knows of clients that resumed in other processes: while any follows,
        # the grace does not run out (it counts this process's followers only).
        followed_elsewhere = getattr(self.store, "followed_elsewhere", None)
        server = self.app.server
        if followed_elsewhere is None or server is None or generation.watching:
            return
        generation.watching = True

        async def watch() -> None:
            try:
                while stream_id in self._generations and generation.followers <= 0:
                    left = generation.scope.deadline - anyio.current_time()
                    # No deadline: wakes before the grace runs out, or once the stream ended.
                    await anyio.sleep(max(0.1, min(left - 0.5, generation.grace_s / 2, 1.0)))
                    if generation.followers > 0 or stream_id not in self._generations:
                        break
                    if await followed_elsewhere(stream_id):
                        generation.scope.deadline = anyio.current_time() + generation.grace_s
            finally:
                generation.watching = False

        server.spawn(watch)

    # -- resume and models -----------------------------------------------------------------

    async def resume(self, request: Request, dialect: Dialect) -> Response | EventStream:
        """``GET .../{id}/events``: replay after ``Last-Event-ID``, then follow live."""
        stream_id = self.stream_id_of(request.path_params["id"])
        try:
            if not self.may_resume(request, stream_id):
                presented = dialect.api_key(request.headers, request.query)
                if presented is None and "resume_token" in request.query:
                    raise ChatError.invalid_resume_token()
                self._authenticate(dialect, request)
        except ChatError as error:
            return self._error(dialect, error)
        last_id = request.last_event_id
        try:
            if not await self.store.exists(stream_id):
                return self._error(dialect, self._not_found())
            plan = await self.store.plan(stream_id, last_id)
        except StoreUnavailable:
            return self._error(dialect, _REPLAY_UNAVAILABLE)
        generation = self._generations.get(stream_id)
        if generation is not None:
            dialect = generation.dialect
        else:
            dialect = self.dialects.get(plan.tag, dialect)
        headers = [
            *self._stream_headers(stream_id),
            ("x-rawsse-replay-from", plan.first_id or ""),
            ("x-rawsse-replay-gap", "1" if plan.gap else "0"),
        ]
        if plan.ended and plan.first_id is None and not plan.gap:
            # The client has the whole stream: 204 is what makes an EventSource stop; an empty
            # 200 would have it reconnect after every retry delay, for as long as the page is
            # open ("HTTP 204 No Content ... prevent the user agent from reconnecting").
            return Response(b"", 204, headers)

        async def follow(stream: EventStream) -> None:
            # Registered while it runs, so that end_resumes can end it.
            running = self._resumes.setdefault(stream_id, set())
            running.add(stream)
            frames = self._follow(generation, dialect, stream_id, last_id)
            try:
                async for frame in frames:
                    await stream.send_raw(frame)
            finally:
                running.discard(stream)
                if not running and self._resumes.get(stream_id) is running:
                    del self._resumes[stream_id]
                with anyio.CancelScope(shield=True):
                    await _close(frames)

        return _Follower(
            follow,
            generation,
            heartbeat=dialect.heartbeat_frame,
            headers=headers,
        )

    def _not_found(self) -> ChatError:
        message = "No stream with this id is kept for resuming."
        if os.environ.get(_WORKER_ENV) and not getattr(self.store, "shared", False):
            message += (
                " This server runs several worker processes, each keeping its own streams: "
                "the stream may live in another process. Start the server with --redis URL "
                "(or RAWSSE_REDIS_URL) so that every process can resume every stream."
            )
        return ChatError(404, message, code="stream_not_found")

    @staticmethod
    def stream_id_of(name: str) -> str:
        """The stream id in a resume path: the ``x-rawsse-stream-id`` or a vendor id."""
        for prefix in _ID_PREFIXES:
            if name.startswith(prefix):
                return name[len(prefix) :]
        return name

    def may_resume(self, request: Request, stream_id: str) -> bool:
        """True when ``request`` carries the resume token of ``stream_id`` (``?resume_token=``)
        or needs none (no API keys configured)."""
        if not self.api_keys:
            return True
        presented = request.query.get("resume_token")
        return check_resume_token(self._resume_secret, stream_id, presented)

    def end_resumes(self, stream_id: str) -> int:
        """End every resume response now following ``stream_id`` (the stream itself goes on);
        each client reconnects with ``Last-Event-ID``. Returns how many were ended."""
        running = list(self._resumes.get(stream_id, ()))
        for stream in running:
            stream.end("lifetime")
        return len(running)

    def _stream_headers(self, stream_id: str) -> list[tuple[str, str]]:
        headers = [("x-rawsse-stream-id", stream_id)]
        if self._resume_secret is not None:
            headers.append(("x-rawsse-resume-token", resume_token(self._resume_secret, stream_id)))
        return headers

    async def list_models(self, request: Request, dialect: Dialect) -> Response:
        """``GET /v1/models`` in OpenAI's list format."""
        try:
            self._authenticate(dialect, request)
        except ChatError as error:
            return self._error(dialect, error)
        return JSONResponse(
            {"object": "list", "data": [self._model_card(name) for name in self.models]}
        )

    async def get_model(self, request: Request, dialect: Dialect) -> Response:
        """``GET /v1/models/{model}``."""
        try:
            self._authenticate(dialect, request)
        except ChatError as error:
            return self._error(dialect, error)
        name = request.path_params["model"]
        if name not in self.models:
            return self._error(dialect, ChatError.model_not_found(name))
        return JSONResponse(self._model_card(name))

    def _model_card(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "rawsse"}


def _check_content_type(request: Request) -> None:
    """A body declared as anything but JSON is a 415 (a request without a type is read as JSON)."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ChatError(
            415,
            f"Unsupported Content-Type {content_type!r}: the body must be JSON, sent with "
            "'Content-Type: application/json'.",
            code="unsupported_media_type",
        )


class _InlineStream(EventStream):
    """An inline chat stream: the backend runs inside the response, in ``_produce_inline``.

    The producer's state lives in the stream's own slots, and the function it runs is a
    module-level one: a held stream keeps no producer object, bound methods or closure (they
    cost several times this), and no reference cycle. Its headers are made when the head is
    written, not kept for the stream's whole life.
    """

    __slots__ = ("_headers", "deltas", "dialect", "frames", "service", "stream_id")

    def __init__(
        self,
        service: ChatService,
        dialect: Dialect,
        frames: DialectStream,
        deltas: Deltas,
        stream_id: str,
    ) -> None:
        self._headers: list[tuple[bytes, bytes]] | None = None
        super().__init__(
            _produce_inline,
            heartbeat=dialect.heartbeat_frame,
            retry_ms="off",  # the dialect carries it in its first frame
        )
        self.service = service
        self.dialect = dialect
        self.frames = frames
        self.deltas = deltas
        self.stream_id = stream_id

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The SSE headers and the stream's own (its id, its resume token)."""
        if self._headers is not None:
            return self._headers
        return _sse_headers_with(self.service._stream_headers(self.stream_id))

    @headers.setter
    def headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        # EventStream's own (the shared SSE headers) are not kept; anything set later is.
        if headers is not _SSE_HEADER_BYTES:
            self._headers = headers


async def _produce_inline(stream: EventStream) -> None:
    """An inline stream's producer: the dialect's frames of the backend's deltas, each
    recorded for resume, then sent. (Few locals, short calls: a held stream keeps this
    frame, waiting.)"""
    assert isinstance(stream, _InlineStream)
    frames, deltas = stream.frames, stream.deltas
    await _create_inline(stream)
    try:
        await _emit(stream, frames.start())
        if isinstance(deltas, PacedAnswer):
            # rawsse's own demo models: the wait is this frame's, the model holds no coroutine.
            while True:
                wait_s = deltas.wait_s()
                if wait_s is not None:
                    await pause(wait_s)
                try:
                    delta = deltas.take()
                except StopAsyncIteration:
                    break
                await _emit(stream, frames.feed(delta))
        else:
            async for delta in deltas:
                await _emit(stream, frames.feed(delta))
        await _emit(stream, frames.finish())
    except ClientDisconnected:
        raise
    except Exception as exc:
        await _emit(stream, _failed(frames, exc))
    finally:
        await _end_inline(stream)


async def _create_inline(stream: _InlineStream) -> None:
    """Create an inline stream's log in the store."""
    await stream.service.store.create(stream.stream_id, tag=stream.dialect.name)


def _failed(frames: DialectStream, exc: Exception) -> list[bytes]:
    """The dialect's error frames for a model that raised ``exc`` mid-stream."""
    if not isinstance(exc, ChatError):
        logger.exception("model %r failed mid-stream", frames.request.model, exc_info=exc)
    return frames.fail(as_chat_error(exc))


async def _end_inline(stream: _InlineStream) -> None:
    """Record why an inline stream stopped (if the model did not finish it), and finish it
    in the store."""
    store, deltas = stream.service.store, stream.deltas
    finish_nowait = getattr(store, "finish_nowait", None)
    if finish_nowait is not None and not _has_cleanup(deltas):
        # Nothing to wait for (the model has ended, the store finishes at once): no
        # shielded scope, a good part of a stream's cost when 100,000 end together.
        _record_end(stream, store)
        finish_nowait(stream.stream_id)
    else:
        with anyio.CancelScope(shield=True):
            await _close(deltas)
            _record_end(stream, store)
            await store.finish(stream.stream_id)


def _record_end(stream: _InlineStream, store: ReplayStore) -> None:
    frames = stream.frames
    if not frames.ended:
        # Cancelled: the client left, or the server ends the stream. Record why it stops
        # (for resume); the farewell sends it to a client still reading.
        ending = frames.fail(_stopped_error(stream.stop_reason))
        _record_nowait(store, stream.stream_id, frames, ending)
        if ending:
            stream.farewell = _Farewell(b"".join(ending))


class _Farewell:
    """A stream's last frames when the server ends it (made once the producer stopped)."""

    __slots__ = ("frames",)

    def __init__(self, frames: bytes) -> None:
        self.frames = frames

    def __call__(self, reason: StreamEnd) -> bytes:
        return self.frames


async def _emit(stream: _InlineStream, batch: list[bytes]) -> None:
    """Record ``batch`` for resume, then send it."""
    await _record(stream.service.store, stream.stream_id, stream.frames, batch)
    for frame in batch:
        await stream.send_raw(frame)


async def _record(
    store: ReplayStore,
    stream_id: str,
    frames: DialectStream,
    batch: list[bytes],
    *,
    wait: bool = True,
) -> None:
    if _record_nowait(store, stream_id, frames, batch) and wait:
        # A network store's queue is past its mark: let it catch up (within its bound).
        await store.drain()


def _record_nowait(
    store: ReplayStore, stream_id: str, frames: DialectStream, batch: list[bytes]
) -> bool:
    """Append ``batch`` to the store without waiting; True when its queue is past its mark."""
    # The batch's frames carry the ids last_event_id - len(batch) + 1 ... last_event_id.
    first = frames.last_event_id - len(batch) + 1
    append_nowait = store.append_nowait
    full = False
    for offset, frame in enumerate(batch):
        full = append_nowait(stream_id, str(first + offset), frame) or full
    return full


def _tail(
    dialect: Dialect, stream_id: str, last_id: str | None, error: ChatError
) -> list[tuple[str, bytes]]:
    """The dialect's error frames ending a stream whose last frame was ``last_id``, with
    their ids: what its producer would have written had it failed there."""
    last = int(last_id) if last_id is not None and last_id.isdigit() else 0
    request = ChatRequest(model="", messages=(), dialect=dialect.name, stream=True)
    frames = dialect.new_stream(request, stream_id, int(time.time()))
    frames.last_event_id = last
    return [(str(last + 1 + offset), frame) for offset, frame in enumerate(frames.fail(error))]


def _unnumbered(dialect: Dialect, stream_id: str, error: ChatError) -> list[bytes]:
    """The dialect's error frames for this client only, without ``id:`` lines (they are not
    the stream's frames: a reconnecting client keeps its own last id)."""
    return [
        b"\n".join(line for line in frame.split(b"\n") if not line.startswith(b"id:"))
        for _, frame in _tail(dialect, stream_id, None, error)
    ]


def _has_cleanup(deltas: AsyncIterator[Any]) -> bool:
    """Whether closing ``deltas`` may run code: not for a generator that ended (ran out,
    raised, or was cancelled mid-step: no frame left), nor for an iterator without aclose,
    nor for a demo model's answer."""
    if isinstance(deltas, PacedAnswer):
        return False
    return hasattr(deltas, "aclose") and getattr(deltas, "ag_frame", True) is not None


async def _close(deltas: AsyncIterator[Any]) -> None:
    aclose = getattr(deltas, "aclose", None)
    # No timeout scope for what has nothing to clean up (one per stream at shutdown).
    if aclose is not None and _has_cleanup(deltas):
        with anyio.move_on_after(_ACLOSE_TIMEOUT_S):
            await aclose()


def mount_chat(
    app: App,
    models: Mapping[str, ModelBackend],
    *,
    api_keys: Collection[str] = (),
    replay_store: ReplayStore | None = None,
    resume_grace_s: float = 0.0,
    status_commit_s: float | None = None,
) -> ChatService:
    """Mount the chat routes of every dialect on ``app`` for ``models`` (name -> backend).

    ``api_keys`` (a list of keys, not one string) empty means no authentication; a key that
    no client could present (empty, not printable ASCII) is a ``ValueError``. ``replay_store``
    defaults to a bounded in-memory ring. See the module docstring for ``resume_grace_s`` and
    ``status_commit_s``.
    """
    from rawsse.chat.anthropic_dialect import ANTHROPIC
    from rawsse.chat.gemini_dialect import GEMINI
    from rawsse.chat.openai_dialect import OPENAI

    service = ChatService(
        app,
        models,
        api_keys=api_keys,
        replay_store=replay_store,
        resume_grace_s=resume_grace_s,
        status_commit_s=status_commit_s,
    )

    def renderer(dialect: Dialect) -> Any:
        def render(status: int, detail: str) -> Response:
            if status == 413:
                error = ChatError.too_large(service_limit(detail))
            else:
                error = ChatError(status, detail)
            return ChatService._error(dialect, error)

        return render

    def service_limit(detail: str) -> int:
        digits = "".join(ch for ch in detail.partition("limit")[2] if ch.isdigit())
        return int(digits) if digits else 0

    def route(dialect: Dialect, **fixed: Any) -> Any:
        service.dialects.setdefault(dialect.name, dialect)

        async def handler(request: Request) -> Response | EventStream:
            model = request.path_params.get("model")
            return await service.handle(dialect, request, model=model, **fixed)

        return handler

    async def resume(request: Request) -> Response | EventStream:
        return await service.resume(request, OPENAI)

    async def get_model(request: Request) -> Response:
        return await service.get_model(request, OPENAI)

    async def list_models(request: Request) -> Response:
        return await service.list_models(request, OPENAI)

    app.add_route("/v1/chat/completions", route(OPENAI), ("POST",), error_renderer=renderer(OPENAI))
    app.add_route("/v1/chat/completions/{id}/events", resume, ("GET",))
    app.add_route("/v1/models", list_models, ("GET",))
    app.add_route("/v1/models/{model}", get_model, ("GET",))
    app.add_route("/v1/messages", route(ANTHROPIC), ("POST",), error_renderer=renderer(ANTHROPIC))
    for version in ("v1beta", "v1"):
        app.add_route(
            f"/{version}/models/{{model}}:streamGenerateContent",
            route(GEMINI, stream=True),
            ("POST",),
            error_renderer=renderer(GEMINI),
        )
        app.add_route(
            f"/{version}/models/{{model}}:generateContent",
            route(GEMINI, stream=False),
            ("POST",),
            error_renderer=renderer(GEMINI),
        )
    extra: list[tuple[str, str, str]] = [
        ("rawsse.chat.chatgpt_web_dialect", "CHATGPT_WEB", "/backend-api/conversation"),
        ("rawsse.chat.envelope_dialect", "ENVELOPE", "/v1/envelope/completions"),
    ]
    import importlib

    for module_name, attribute, path in extra:
        try:
            dialect = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError):  # pragma: no cover - dialect not built yet
            continue
        app.add_route(path, route(dialect), ("POST",), error_renderer=renderer(dialect))
    return service
