"""``RedisBus``: one process's link to Redis, shared by its replay store and its broadcasts.

Contract: a bus is made without I/O (``RedisBus(url)``) and runs inside ``async with bus:``,
which connects (or raises ``RedisUnavailable``, one line without credentials), then keeps three
tasks until the block ends:

1. The *flusher*. Producers queue appends and publishes without waiting (``queue_frame``,
   ``queue_publish``); the flusher sends everything queued as *one* script call (a round trip
   for many events, as the socket flusher coalesces writes), then what queued meanwhile. The
   queue is bounded (``max_pending_bytes``): past it, and for a batch Redis did not take,
   appends are dropped and counted in ``rawsse_replay_errors_total``; the readers see the hole
   and say so. After a failure it waits (backing off, up to 5 s) before the next batch.
2. The *hub* (``rawsse.redis._hub``): one Pub/Sub connection per process, for the followers
   of replay streams (``listen``) and the broadcast channels (``attach``) of this process.
3. The *keeper*: renews this process's lease (``P node:N``, so followers elsewhere can tell a
   stream whose producer died from a slow one) and drops subscriptions nobody uses.

Never blocks the event loop, never waits on Redis in a producer's path, and logs one line when
Redis goes away and one when it is back (not one per event). The Redis client (coredis) is
imported when a bus connects, never before.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc

from rawsse._counters import METRICS, StreamMetrics
from rawsse.redis import _scripts
from rawsse.redis._hub import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    Hub,
    Listener,
    describe,
    split_frames,
)
from rawsse.replay import StoreUnavailable

__all__ = ["REDIS_URL_ENV", "RedisBus", "RedisUnavailable", "probe", "redact_url"]

logger = logging.getLogger("rawsse.redis")

# Where ``rawsse serve`` and ``RedisBus.shared()`` look for the URL.
REDIS_URL_ENV = "RAWSSE_REDIS_URL"
# A script call carries at most about this many bytes of frames (Lua runs atomically: one
# huge call would hold up every other client of the Redis server).
_CALL_BYTES = 4 * 1024 * 1024
# A queue that overflows is reported at most this often.
_OVERFLOW_LOG_EVERY_S = 60.0


class RedisUnavailable(StoreUnavailable):
    """Redis could not be reached (the message names it without credentials)."""


def redact_url(url: str) -> str:
    """``url`` with its password (and user name) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable Redis URL>"
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


class Snapshot:
    """What ``RedisBus.read`` found: the stream's metadata and a page of its log, as frames
    after ``after`` (``entries``: ``(id, frame)``, with ``frame`` None for the end), without
    those older than the newest ``keep`` (0: keep all)."""

    __slots__ = (
        "alive",
        "batches",
        "ended",
        "entries",
        "epoch",
        "exists",
        "last",
        "node",
        "since",
        "tag",
    )

    def __init__(self, reply: Any, after: int, keep: int = 0) -> None:
        meta, alive, entries, top = reply
        if keep:
            after = max(after, int(top) - keep)
        epoch, since, ended, last, node, tag = meta
        self.exists = epoch is not None
        self.epoch: bytes = epoch or b""
        self.since = int(since) if since is not None else 1
        self.ended = ended is not None
        self.last = int(last) if last is not None else 0
        self.node: bytes | None = node
        self.tag = tag.decode() if tag else ""
        self.alive = bool(alive)
        self.batches = len(entries)  # log entries read (a page is counted in these)
        self.entries: list[tuple[int, bytes | None]] = []
        for entry_id, fields in entries:
            number, _, seq = entry_id.partition(b"-")
            last = int(number)
            if seq != b"0":
                self.entries.append((last, None))
                continue
            frames = split_frames(_field(fields, b"l"), _field(fields, b"f"))
            first = last - len(frames) + 1
            self.entries += [
                (first + k, frame) for k, frame in enumerate(frames) if first + k > after
            ]


def _field(fields: Any, name: bytes) -> bytes:
    # XRANGE's field list: a flat list [name, value, ...] (or a mapping, by client version).
    if isinstance(fields, dict):
        return bytes(fields[name])
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == name:
            return bytes(fields[index + 1])
    raise ValueError(f"log entry without field {name!r}")


class _Group:
    """Queued appends of one stream, contiguous ids ``first`` ... ``last``."""

    __slots__ = ("first", "flags", "frames", "last", "nbytes", "stream")

    def __init__(self, stream: ProducedStream, first: int, flags: int = 0) -> None:
        self.stream = stream
        self.first = first
        self.last = first - 1
        self.flags = flags
        self.frames: list[bytes] = []
        self.nbytes = 0


class ProducedStream:
    """A replay stream this process produces: its keys, epoch, tag and last id queued."""

    __slots__ = ("created", "epoch", "key", "last", "log", "meta", "tag")

    def __init__(self, key: str, log: str, meta: str, tag: str) -> None:
        if any(c.isspace() for c in tag):
            raise ValueError("a stream's tag must not contain whitespace")
        self.key = key
        self.log = log
        self.meta = meta
        self.tag = tag
        self.epoch = secrets.token_hex(6)
        self.last = 0
        self.created = False


class RedisBus:
    """One process's connection to Redis: the replay store's log and the broadcast bus.

    ``url`` is ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``unix:///path/to/socket``. Every key and channel starts with ``prefix``. See the module
    docstring for what runs while the bus is open (``async with bus:``).
    """

    _shared: dict[str, RedisBus] = {}

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "rawsse:",
        connect_timeout_s: float = 5.0,  # a loaded process takes a while to get its turn
        # Past this a call counts as failed. Generous: a process whose event loop is saturated
        # takes long to see even a quick reply, and the queue's bound limits memory meanwhile.
        command_timeout_s: float = 10.0,
        max_pending_bytes: int = 64 * 1024 * 1024,  # frames queued while Redis is slow
        lease_s: float = 5.0,  # a stopped process's streams are orphaned within about this
        metrics: StreamMetrics = METRICS,
    ) -> None:
        if connect_timeout_s <= 0 or command_timeout_s <= 0 or lease_s <= 0:
            raise ValueError("timeouts must be positive")
        if max_pending_bytes <= 0:
            raise ValueError("max_pending_bytes must be positive")
        self.url = url
        self.display_url = redact_url(url)
        self.prefix = prefix
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.max_pending_bytes = max_pending_bytes
        self.lease_s = lease_s
        self.metrics = metrics
        self.node = secrets.token_hex(8)
        self.node_prefix = f"{prefix}node:"
        # Counters: batches and frames sent, for the benchmark's round trips per event.
        self.batches_sent = 0
        self.frames_sent = 0
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._pubsub_retry: Any = None
        self._exit: contextlib.AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        # Flusher state.
        self._groups: list[_Group] = []
        self._open: dict[ProducedStream, _Group] = {}
        self._publishes: list[tuple[str, bytes]] = []
        self._pending_bytes = 0
        self._wake = anyio.Event()
        self._woken = False
        self._idle: anyio.Event | None = None
        self._sending = False
        self._room: anyio.Event | None = None
        self.hub = Hub(self)
        # Health: one log line when Redis goes away, one when it is back.
        self._down_since: float | None = None
        self._dropped_while_down = 0
        self._overflow_dropped = 0
        self._overflow_logged_at = -math.inf

    @classmethod
    def shared(cls, url: str | None = None) -> RedisBus:
        """The process's bus for ``url`` (default: ``$RAWSSE_REDIS_URL``), made on first use:
        the one ``rawsse serve --redis URL`` opens, for apps that build their own routes."""
        url = url or os.environ.get(REDIS_URL_ENV)
        if not url:
            raise RuntimeError(f"no Redis URL given and {REDIS_URL_ENV} is not set")
        bus = cls._shared.get(url)
        if bus is None:
            bus = cls._shared[url] = cls(url)
        return bus

    def __repr__(self) -> str:
        return f"RedisBus({self.display_url!r}, prefix={self.prefix!r})"

    @property
    def running(self) -> bool:
        """True inside ``async with bus:``."""
        return self._tg is not None

    # -- life cycle --------------------------------------------------------------------------

    async def __aenter__(self) -> RedisBus:
        if self._exit is not None:
            raise RuntimeError("this RedisBus is already open")
        try:
            import coredis
        except ImportError as exc:
            raise RedisUnavailable(
                "the Redis client is not installed: pip install 'rawsse[redis]'"
            ) from exc
        from coredis.retry import NoRetryPolicy

        # rawsse retries (with backoff) and logs once per outage itself: coredis's line per
        # retry attempt would repeat that at INFO, unless its logger was configured.
        coredis_logger = logging.getLogger("coredis")
        if coredis_logger.level == logging.NOTSET:
            coredis_logger.setLevel(logging.WARNING)
        stack = contextlib.AsyncExitStack()
        try:
            client = coredis.Redis.from_url(
                self.url,
                connect_timeout=self.connect_timeout_s,
                stream_timeout=self.command_timeout_s,
                client_name=f"rawsse-{self.node}",
                retry_policy=NoRetryPolicy(),
            )
            await stack.enter_async_context(client)
            with anyio.fail_after(self.connect_timeout_s):
                await client.ping()
                await client.set(self._lease_key(), b"1", px=self._lease_ms())
        except Exception as exc:
            with contextlib.suppress(Exception):
                await stack.aclose()
            raise RedisUnavailable(
                f"cannot reach Redis at {self.display_url}: {self._scrub(describe(exc))}"
            ) from None
        self._client = client
        from coredis.exceptions import ConnectionError as RedisConnectionError
        from coredis.retry import (
            CompositeRetryPolicy,
            ConstantRetryPolicy,
            ExponentialBackoffRetryPolicy,
        )

        # The Pub/Sub connection reconnects on its own, backing off as the flusher does.
        self._pubsub_retry = CompositeRetryPolicy(
            ExponentialBackoffRetryPolicy(
                (RedisConnectionError,),
                retries=None,
                base_delay=BACKOFF_FIRST_S,
                max_delay=BACKOFF_MAX_S,
                jitter=True,
            ),
            ConstantRetryPolicy((TimeoutError,), retries=2, delay=BACKOFF_FIRST_S),
        )
        for name in ("APPEND", "READ", "ABANDON", "PUBLISH", "HISTORY"):
            self._scripts[name] = client.register_script(getattr(_scripts, name))
        tg = await stack.enter_async_context(anyio.create_task_group())
        self._exit = stack
        self._tg = tg
        tg.start_soon(self._run_flusher)
        # The Pub/Sub connection takes the pool's connection: open it now, then one for
        # commands, while the process is idle (connecting under load can take long).
        with anyio.move_on_after(self.connect_timeout_s):
            await tg.start(self.hub.run)
            await client.ping()
        tg.start_soon(self._run_keeper)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, tg = self._exit, self._tg
        if stack is None or tg is None:
            return
        with anyio.CancelScope(shield=True):
            # What producers queued last (their streams' ends) goes out if Redis takes it soon.
            with anyio.move_on_after(self.command_timeout_s):
                await self.flushed()
            with anyio.move_on_after(self.command_timeout_s), contextlib.suppress(Exception):
                await self._client.delete([self._lease_key()])
        tg.cancel_scope.cancel()
        self._tg = None
        try:
            # Not shielded here: the task group must be left in the scope it was entered in.
            await stack.aclose()
        finally:
            self._exit = None
            self._client = None

    async def flushed(self) -> None:
        """Wait until everything queued so far has been sent (or dropped)."""
        while (self._groups or self._publishes or self._sending) and self._tg is not None:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    # -- keys ---------------------------------------------------------------------------------

    def stream_keys(self, key: str) -> tuple[str, str]:
        """The log and metadata keys of replay stream ``key``."""
        return f"{self.prefix}s:{key}", f"{self.prefix}m:{key}"

    def channel_keys(self, channel: str) -> tuple[str, str]:
        """The history and counter keys of broadcast channel ``channel``."""
        return f"{self.prefix}b:{channel}", f"{self.prefix}n:{channel}"

    def _lease_key(self) -> str:
        return f"{self.node_prefix}{self.node}"

    def _lease_ms(self) -> int:
        return max(1, int(self.lease_s * 1000))

    def _scrub(self, text: str) -> str:
        password = urlsplit(self.url).password if "@" in self.url else None
        return text.replace(password, "***") if password else text

    # -- health -------------------------------------------------------------------------------

    def _failed(self, what: str, exc: BaseException | None, dropped: int) -> None:
        self.metrics.replay_errors_total += dropped
        self._dropped_while_down += dropped
        if self._down_since is None:
            self._down_since = time.monotonic()
            reason = self._scrub(describe(exc)) if exc is not None else "too slow"
            logger.warning(
                "Redis at %s unavailable (%s: %s): appends and reads that need it fail and are "
                "counted in rawsse_replay_errors_total; retrying with backoff",
                self.display_url,
                what,
                reason,
            )

    def _overflowed(self) -> None:
        # Redis takes batches more slowly than producers fill the queue: drop, count, and say
        # so at most once a minute (with how many were dropped since the last line).
        self.metrics.replay_errors_total += 1
        self._overflow_dropped += 1
        now = time.monotonic()
        if now - self._overflow_logged_at >= _OVERFLOW_LOG_EVERY_S:
            self._overflow_logged_at = now
            logger.warning(
                "Redis at %s is slower than this process's producers: %d appends dropped "
                "(queue full at max_pending_bytes=%d); counted in rawsse_replay_errors_total",
                self.display_url,
                self._overflow_dropped,
                self.max_pending_bytes,
            )
            self._overflow_dropped = 0

    def _recovered(self) -> None:
        if self._down_since is not None:
            logger.warning(
                "Redis at %s is back after %.1f s; %d appends were dropped meanwhile",
                self.display_url,
                time.monotonic() - self._down_since,
                self._dropped_while_down,
            )
            self._down_since = None
            self._dropped_while_down = 0

    # -- producers: queue without waiting -----------------------------------------------------

    def _queue(
        self, stream: ProducedStream, first: int, nbytes: int, flags: int = 0
    ) -> _Group | None:
        if self._tg is None:
            return None  # not open: nothing would ever send it
        group = self._open.get(stream)
        if group is None or group.last != first - 1 or group.flags & 2:
            group = _Group(stream, first, flags)
            self._open[stream] = group
            self._groups.append(group)
        else:
            group.flags |= flags
        group.nbytes += nbytes
        self._pending_bytes += nbytes
        if not self._woken:
            self._woken = True
            self._wake.set()
        return group

    def queue_create(self, stream: ProducedStream) -> None:
        """Queue the creation of ``stream`` (its metadata)."""
        self._queue(stream, 1, 64, flags=1)

    def queue_frame(self, stream: ProducedStream, event_id: int, frame: bytes) -> bool:
        """Queue frame ``event_id`` of ``stream``; dropped (and counted) past the bound.
        True when the queue is past half the bound: the producer should ``drained()``."""
        # The end goes after this id even if the frame is dropped: readers then see the hole.
        stream.last = event_id
        size = len(frame)
        if self._pending_bytes + size > self.max_pending_bytes:
            self._overflowed()
            return True
        group = self._queue(stream, event_id, size)
        if group is None:
            self.metrics.replay_errors_total += 1
            return False
        group.frames.append(frame)
        group.last = event_id
        return self._pending_bytes > self.max_pending_bytes // 2

    async def drained(self) -> None:
        """Wait until the queue is under half its bound, at most ``command_timeout_s``."""
        if self._pending_bytes <= self.max_pending_bytes // 2 or self._tg is None:
            return
        if self._room is None:
            self._room = anyio.Event()
        room = self._room
        with anyio.move_on_after(self.command_timeout_s):
            await room.wait()

    def queue_end(self, stream: ProducedStream) -> None:
        """Queue the end of ``stream`` after its last queued frame."""
        group = self._queue(stream, stream.last + 1, 64, flags=2)
        if group is not None:
            group.last = stream.last
        self._open.pop(stream, None)

    def queue_publish(self, channel: str, frame: bytes) -> None:
        """Queue a broadcast of ``frame`` (without an ``id:`` line) on ``channel``."""
        size = len(frame)
        if self._pending_bytes + size > self.max_pending_bytes or self._tg is None:
            self._overflowed()
            return
        self._publishes.append((channel, frame))
        self._pending_bytes += size
        if not self._woken:
            self._woken = True
            self._wake.set()

    # -- the flusher --------------------------------------------------------------------------

    async def _run_flusher(self) -> None:
        backoff = 0.0
        while True:
            self._sending = False
            if not self._groups and not self._publishes:
                if self._idle is not None:
                    self._idle.set()
                    self._idle = None
                self._wake = anyio.Event()
                self._woken = False
                # No deadline: wakes when a producer queues something.
                await self._wake.wait()
            self._sending = True
            groups, publishes = self._groups, self._publishes
            self._groups, self._publishes, self._open = [], [], {}
            self._pending_bytes = 0
            if self._room is not None:  # producers waiting for room: there is now
                self._room.set()
                self._room = None
            ok = await self._send_groups(groups) if groups else True
            if publishes:
                ok = await self._send_publishes(publishes) and ok
            if ok:
                backoff = 0.0
                continue
            backoff = min(max(backoff * 2, BACKOFF_FIRST_S), BACKOFF_MAX_S)
            await anyio.sleep(backoff)

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        with anyio.fail_after(self.command_timeout_s):
            return await self._scripts[name](keys=keys, args=args)

    async def _send_groups(self, groups: list[_Group]) -> bool:
        # Cut into calls of about _CALL_BYTES, one after the other on one connection (sent
        # together, coredis would open a connection per call still being written).
        head = [
            self.node,
            self._live_ttl_ms,
            self._end_ttl_ms,
            self._maxlen,
            self._lease_key(),
            self._lease_ms(),
        ]
        calls: list[tuple[list[str], list[Any], int]] = []
        keys: list[str] = []
        args: list[Any] = list(head)
        size = frames = 0
        for index, group in enumerate(groups):
            stream = group.stream
            keys += (stream.log, stream.meta)
            args += (
                f"{group.first} {group.last} {group.flags} {stream.epoch} {stream.tag}",
                ",".join([str(len(frame)) for frame in group.frames]),
                b"".join(group.frames),
            )
            size += group.nbytes
            frames += len(group.frames)
            if size >= _CALL_BYTES or index == len(groups) - 1:
                calls.append((keys, args, frames))
                keys, args = [], list(head)
                size = frames = 0
        results: list[bool] = []
        for call in calls:
            await self._send_call(*call, results)
        return all(results)

    async def _send_call(
        self, keys: list[str], args: list[Any], frames: int, results: list[bool]
    ) -> None:
        try:
            await self._call("APPEND", keys, args)
        except Exception as exc:
            self._failed("append", exc, frames)
            results.append(False)
        else:
            self.batches_sent += 1
            self.frames_sent += frames
            self._recovered()
            results.append(True)

    async def _send_publishes(self, publishes: list[tuple[str, bytes]]) -> bool:
        keys: list[str] = []
        args: list[Any] = [self._history_len, self._history_ttl_ms]
        for channel, frame in publishes:
            keys += self.channel_keys(channel)
            args.append(frame)
        try:
            await self._call("PUBLISH", keys, args)
        except Exception as exc:
            self._failed("publish", exc, len(publishes))
            return False
        self.batches_sent += 1
        self._recovered()
        return True

    # Set by the replay store and broadcasts that use this bus (the last one wins).
    _live_ttl_ms = 3_600_000
    _end_ttl_ms = 300_000
    _maxlen = 10_000
    _history_len = 1_000
    _history_ttl_ms = 86_400_000

    def configure_streams(self, *, maxlen: int, live_ttl_s: float, end_ttl_s: float) -> None:
        """Bounds of replay stream logs: entries kept, expiry while live and after the end."""
        self._maxlen = maxlen
        self._live_ttl_ms = max(1, int(live_ttl_s * 1000))
        self._end_ttl_ms = max(1, int(end_ttl_s * 1000))

    def configure_history(self, *, length: int, ttl_s: float) -> None:
        """Bounds of broadcast channel histories: events kept, expiry after the last one."""
        self._history_len = length
        self._history_ttl_ms = max(1, int(ttl_s * 1000))

    # -- readers --------------------------------------------------------------------------------

    def _require_client(self) -> Any:
        if self._client is None:
            raise StoreUnavailable(f"the Redis bus for {self.display_url} is not open")
        return self._client

    async def read(
        self, key: str, after: int, count: int, node: bytes = b"", keep: int = 0
    ) -> Snapshot:
        """Replay stream ``key``'s metadata, up to ``count`` log entries after ``after`` (of
        the newest ``keep`` frames), and whether its producer (or ``node``, if its metadata is
        gone) holds its lease."""
        self._require_client()
        log, meta = self.stream_keys(key)
        try:
            reply = await self._call("READ", [log, meta], [after, count, self.node_prefix, node])
            snapshot = Snapshot(reply, after, keep)
        except Exception as exc:
            self._failed("read", exc, 1)
            raise StoreUnavailable(
                f"the replay history is unavailable: Redis at {self.display_url} did not answer"
            ) from None
        self._recovered()
        return snapshot

    async def exists(self, key: str) -> bool:
        """True if Redis holds replay stream ``key``."""
        client = self._require_client()
        try:
            with anyio.fail_after(self.command_timeout_s):
                count = await client.exists(list(self.stream_keys(key)))
        except Exception as exc:
            self._failed("read", exc, 1)
            raise StoreUnavailable(
                f"the replay history is unavailable: Redis at {self.display_url} did not answer"
            ) from None
        self._recovered()
        return bool(count)

    def follower_key(self, key: str) -> str:
        """The key a process following replay stream ``key`` keeps alive (``touch``)."""
        return f"{self.prefix}f:{key}"

    async def touch(self, key: str, ttl_s: float) -> None:
        """Say, for ``ttl_s``, that this process has a client following replay stream
        ``key`` (its producer, elsewhere, keeps it going past its resume grace)."""
        client = self._require_client()
        try:
            with anyio.fail_after(self.command_timeout_s):
                await client.set(self.follower_key(key), b"1", px=max(1, int(ttl_s * 1000)))
        except Exception as exc:
            self._failed("follower mark", exc, 0)

    async def followed(self, key: str) -> bool:
        """True if a process (maybe this one) says it has a client following ``key``."""
        client = self._require_client()
        try:
            with anyio.fail_after(self.command_timeout_s):
                return bool(await client.exists([self.follower_key(key)]))
        except Exception as exc:
            self._failed("read", exc, 1)
            return False

    async def abandon(self, key: str, expected: int, frames: Sequence[bytes]) -> bool:
        """End replay stream ``key`` with ``frames`` unless it ended or went past
        ``expected`` (see ``ReplayStore.abandon``)."""
        self._require_client()
        log, meta = self.stream_keys(key)
        lengths = ",".join([str(len(frame)) for frame in frames])
        try:
            done = await self._call(
                "ABANDON", [log, meta], [expected, self._end_ttl_ms, lengths, b"".join(frames)]
            )
        except Exception as exc:
            self._failed("append", exc, len(frames))
            raise StoreUnavailable(
                f"the replay history is unavailable: Redis at {self.display_url} did not answer"
            ) from None
        return bool(done)

    async def history(
        self, channel: str, after: int, count: int
    ) -> tuple[int, list[tuple[int, bytes]]]:
        """Broadcast channel ``channel``'s newest id and up to ``count`` ``(id, frame)`` after
        ``after`` (its history)."""
        self._require_client()
        history, _ = self.channel_keys(channel)
        try:
            top, entries = await self._call("HISTORY", [history], [after, count])
        except Exception as exc:
            self._failed("read", exc, 1)
            raise StoreUnavailable(
                f"the channel history is unavailable: Redis at {self.display_url} did not answer"
            ) from None
        self._recovered()
        return int(top), [
            (int(entry_id.partition(b"-")[0]), _field(fields, b"f")) for entry_id, fields in entries
        ]

    # -- the hub --------------------------------------------------------------------------------

    def listen(self, key: str) -> contextlib.AbstractAsyncContextManager[Listener]:
        """A ``Listener`` of replay stream ``key``'s batches for the block (subscribed when
        the block starts, or as soon as the hub can: readers also poll the log)."""
        return self.hub.listen(self.stream_keys(key)[0].encode())

    async def attach(self, channel: str, sink: Callable[[int, bytes], None]) -> None:
        """Deliver broadcast channel ``channel``'s frames to ``sink(id, frame)`` from now on, in
        order and once each (holes filled from its history)."""
        await self.hub.attach(self.channel_keys(channel)[0].encode(), channel, sink)

    def detach(self, channel: str) -> None:
        """Stop delivering ``channel`` (``attach``'s undo)."""
        self.hub.detach(self.channel_keys(channel)[0].encode())

    # -- the keeper -----------------------------------------------------------------------------

    async def _run_keeper(self) -> None:
        interval = self.lease_s / 3
        while True:
            await anyio.sleep(interval)
            try:
                with anyio.fail_after(self.command_timeout_s):
                    await self._client.set(self._lease_key(), b"1", px=self._lease_ms())
            except Exception as exc:
                self._failed("lease", exc, 0)
                continue
            self._recovered()
            await self.hub.upkeep()


async def probe(url: str) -> None:
    """Connect to Redis at ``url`` and leave; raises ``RedisUnavailable`` if it cannot."""
    async with RedisBus(url):
        pass
