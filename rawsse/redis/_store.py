"""``RedisReplayStore``: the replay store shared by every process and machine through Redis.

Contract: the same ``ReplayStore`` as the in-memory ring, with each stream's log in a Redis
Stream (bounded by ``max_events_per_stream``, expiring ``live_ttl_s`` after its last append
and ``keep_after_end_s`` after its end), so a client resumes on any process of any machine.

1. Producing: a stream produced here is kept in a local ring too (a ``MemoryReplayStore``) and
   queued on the bus, which sends the frames of all streams in one script call per batch.
   Clients of this process (the first one in background mode, resumes that land here) follow
   the local ring: no Redis round trip, and no gap while Redis is away.
2. Following a stream produced elsewhere: subscribe to its Pub/Sub channel *first*, then read
   the log after ``Last-Event-ID`` in pages, then take the live batches, skipping ids already
   yielded. A batch that does not continue the last id (Pub/Sub lost messages, the listener
   overflowed, the connection came back) sends the follower back to the log; a log that does
   not continue it either is a ``ReplayGap``. Silence makes the follower read the log every
   ``poll_s`` anyway, which also checks the producer: a stream that is not finished, whose
   log does not move and whose producing process's lease is gone twice in a row, raises
   ``ProducerLost``.
3. ``plan`` and the start of ``follow`` agree: an id that is not a number, or beyond the end of
   a finished stream, replays from the start with a gap; frames missing before the first one
   returned (trimmed, expired, lost when Redis restarted empty: a new epoch) are a gap.

Event ids must be the integers 1, 2, 3 ... of the stream (the chat dialects' ``id:`` lines).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence

import anyio

from rawsse.redis._bus import ProducedStream, RedisBus, Snapshot
from rawsse.redis._hub import RESYNC
from rawsse.replay import (
    MemoryReplayStore,
    ProducerLost,
    Replay,
    ReplayGap,
    StoreUnavailable,
)

__all__ = ["RedisReplayStore"]

# Log entries read per round trip while catching up.
_PAGE = 256
# An unknown stream is looked for again after these pauses before it is declared unknown.
_NOT_FOUND_RECHECKS_S = (0.02, 0.05, 0.1)
# A follower on another process retries a failed read this many times (poll_s apart).
_READ_ATTEMPTS = 3


def _parse_id(last_id: str | None) -> int | None:
    """``Last-Event-ID`` as a position in the log: None if absent or not a stream id."""
    if last_id is None:
        return 0
    if last_id.isdigit() and len(last_id) < 19:
        return int(last_id)
    return None


class RedisReplayStore:
    """A ``ReplayStore`` shared through Redis (see the module docstring)."""

    shared = True  # every process sees every stream

    def __init__(
        self,
        bus: RedisBus,
        *,
        max_events_per_stream: int = 10_000,
        keep_after_end_s: float = 300.0,
        live_ttl_s: float = 3600.0,
        poll_s: float = 1.0,
        local_max_bytes: int = 16 * 1024 * 1024,
        local_keep_after_end_s: float = 30.0,
    ) -> None:
        if max_events_per_stream <= 0 or keep_after_end_s <= 0 or live_ttl_s <= 0 or poll_s <= 0:
            raise ValueError("replay store limits must be positive")
        self.bus = bus
        self.max_events_per_stream = max_events_per_stream
        self.keep_after_end_s = keep_after_end_s
        self.poll_s = poll_s
        bus.configure_streams(
            maxlen=max_events_per_stream, live_ttl_s=live_ttl_s, end_ttl_s=keep_after_end_s
        )
        # Streams produced here, for this process's clients (and the bus's queue).
        self.local = MemoryReplayStore(
            max_events_per_stream=max_events_per_stream,
            max_total_bytes=local_max_bytes,
            keep_after_end_s=min(local_keep_after_end_s, keep_after_end_s),
        )
        self._producing: dict[str, ProducedStream] = {}

    # -- producing ------------------------------------------------------------------------------

    async def create(self, key: str, *, tag: str = "") -> None:
        """Start stream ``key`` here (followers anywhere may attach before its first frame)."""
        self.local.create_nowait(key, tag=tag)
        if key not in self._producing:
            log, meta = self.bus.stream_keys(key)
            stream = self._producing[key] = ProducedStream(key, log, meta, tag)
            self.bus.queue_create(stream)

    def append_nowait(self, key: str, event_id: str, frame: bytes) -> bool:
        """Add frame ``event_id`` (1, 2, 3 ...) of stream ``key``; Redis gets it in a batch.
        True when the bus's queue is past its mark (``drain`` before adding more)."""
        self.local.append_nowait(key, event_id, frame)
        stream = self._producing.get(key)
        if stream is None:
            log, meta = self.bus.stream_keys(key)
            stream = self._producing[key] = ProducedStream(key, log, meta, "")
        return self.bus.queue_frame(stream, int(event_id), frame)

    async def drain(self) -> None:
        """Wait until the bus's queue is back under its mark, at most its command timeout."""
        await self.bus.drained()

    async def append(self, key: str, event_id: str, frame: bytes) -> None:
        """``append_nowait`` (for callers that await)."""
        self.append_nowait(key, event_id, frame)

    async def finish(self, key: str) -> None:
        """End stream ``key``: followers everywhere stop after its last frame."""
        self.local.finish_nowait(key)
        stream = self._producing.pop(key, None)
        if stream is not None:
            self.bus.queue_end(stream)

    # -- reading --------------------------------------------------------------------------------

    async def exists(self, key: str) -> bool:
        """True while stream ``key`` is kept here or in Redis (``StoreUnavailable`` if Redis
        does not answer)."""
        if self.local.holds(key):
            return True
        if await self.bus.exists(key):
            return True
        # A stream that started a moment ago in another process may not be in Redis yet (its
        # first batch is on its way): look again shortly before saying no.
        for delay_s in _NOT_FOUND_RECHECKS_S:
            await anyio.sleep(delay_s)
            if self.local.holds(key) or await self.bus.exists(key):
                return True
        return False

    async def plan(self, key: str, last_id: str | None) -> Replay:
        """Where ``follow(key, last_id)`` starts, whether frames before it are missing, and the
        stream's tag."""
        if self.local.holds(key):
            return self.local.plan_nowait(key, last_id)
        _, snapshot, gap = await self._start(key, last_id, 1)
        entries = [e for e in snapshot.entries if e[1] is not None]
        first = str(entries[0][0]) if entries else None
        return Replay(first, gap, snapshot.tag, snapshot.ended)

    async def _start(self, key: str, last_id: str | None, count: int) -> tuple[int, Snapshot, bool]:
        """The position a replay after ``last_id`` starts from, the first page, and the gap."""
        after = _parse_id(last_id)
        keep = self.max_events_per_stream
        snapshot = await self.bus.read(key, after or 0, count, keep=keep)
        if after is None or (snapshot.ended and after > snapshot.last):
            # Not one of this stream's ids: everything kept, and say that it may not follow.
            if after is not None:
                snapshot = await self.bus.read(key, 0, count, keep=keep)
            return 0, snapshot, True
        gap = bool(snapshot.entries) and snapshot.entries[0][0] > after + 1
        if snapshot.entries and snapshot.entries[0][1] is None:
            gap = snapshot.entries[0][0] > after  # the end marker: frames before it lost?
        return after, snapshot, gap

    def follow(self, key: str, last_id: str | None) -> AsyncIterator[bytes]:
        """Frames after ``last_id``, then live ones until the stream ends, wherever it is
        produced (see the module docstring for the errors it raises)."""
        if self.local.holds(key):
            return self.local.follow(key, last_id)
        return self._follow_remote(key, last_id)

    async def _follow_remote(self, key: str, last_id: str | None) -> AsyncIterator[bytes]:
        bus = self.bus
        async with bus.listen(key) as listener:
            pos, snapshot, _ = await self._start(key, last_id, _PAGE)
            node = snapshot.node or b""
            started = False  # the first entry may skip ahead (the gap ``plan`` reported)
            strikes = 0  # consecutive polls that found the producer gone
            touched = -math.inf  # when it last said it follows (``followed_elsewhere``)
            while True:
                now = anyio.current_time()
                if now - touched >= self.poll_s:
                    touched = now
                    await self.bus.touch(key, 3 * self.poll_s)
                if snapshot.node is not None:
                    node = snapshot.node
                for number, frame in snapshot.entries:
                    if frame is None:  # the end
                        if number > pos and started:
                            raise ReplayGap(key, _id(pos))
                        return
                    if number <= pos:
                        continue
                    if number != pos + 1 and started:
                        raise ReplayGap(key, _id(pos))
                    started = True
                    pos = number
                    yield frame
                started = True
                if snapshot.batches >= _PAGE:
                    snapshot = await self._read(key, pos, node)
                    continue
                if snapshot.ended and pos >= snapshot.last:
                    return
                # Live: Pub/Sub batches until one does not continue, or silence.
                timed_out = False
                while True:
                    batch = await listener.get(self.poll_s)
                    if batch is None:
                        timed_out = True
                        break
                    if batch is RESYNC or batch.first > pos + 1:
                        break
                    number = batch.first
                    for frame in batch.frames:
                        if number > pos:
                            pos = number
                            yield frame
                        number += 1
                    if batch.end:
                        return
                    strikes = 0
                    if anyio.current_time() - touched >= self.poll_s:
                        touched = anyio.current_time()
                        await self.bus.touch(key, 3 * self.poll_s)
                before = pos
                snapshot = await self._read(key, pos, node)
                if timed_out and not snapshot.entries and not snapshot.ended:
                    # Nothing new for a while: is anyone still producing this stream? (Its
                    # process renews a lease; twice missing, so a Redis that restarted
                    # empty a moment ago is not mistaken for a dead producer.)
                    strikes = 0 if snapshot.alive else strikes + 1
                    if strikes >= 2:
                        raise ProducerLost(key, _id(before))

    async def _read(self, key: str, after: int, node: bytes) -> Snapshot:
        for attempt in range(_READ_ATTEMPTS):
            try:
                return await self.bus.read(key, after, _PAGE, node, self.max_events_per_stream)
            except StoreUnavailable:
                if attempt == _READ_ATTEMPTS - 1:
                    raise
                await anyio.sleep(self.poll_s)
        raise AssertionError("unreachable")  # pragma: no cover

    async def followed_elsewhere(self, key: str) -> bool:
        """True if a client in another process follows stream ``key`` (produced here): its
        producer should keep going past its resume grace."""
        return await self.bus.followed(key)

    async def abandon(
        self, key: str, last_id: str | None, frames: Sequence[tuple[str, bytes]]
    ) -> bool:
        """End stream ``key`` with ``frames`` (their ids follow ``last_id``) unless it ended or
        moved on; every follower, here and elsewhere, then gets them and the end."""
        if self.local.holds(key):
            return await self.local.abandon(key, last_id, frames)
        expected = _parse_id(last_id)
        if expected is None:
            return False
        return await self.bus.abandon(key, expected, [frame for _, frame in frames])


def _id(position: int) -> str | None:
    return str(position) if position else None
