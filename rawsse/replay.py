"""Replay store: each resumable stream's frames, kept by event id, for clients that reconnect.

Contract: a producer ``create``s a stream, ``append_nowait``s every frame under its event id
(never waiting: a network store sends them in batches) and ``finish``es the stream when it ends.
A client that reconnects with ``Last-Event-ID`` gets, from ``follow(key, last_id)``, the frames
after that id and then the live ones as they are appended, until the stream is finished: no gap
and no duplicate at the hand-off, because replay and live frames come from the same ordered log.
What cannot be replayed is said, never skipped:

1. ``plan`` reports frames missing before the replay starts (``Replay.gap``: trimmed, expired or
   lost), so the server can put it in a response header;
2. ``follow`` raises ``ReplayGap`` when frames are missing *after* it started (a follower that
   fell behind the store's bounds, appends a network store could not make);
3. a shared store's ``follow`` raises ``ProducerLost`` when the process generating the stream
   stopped without finishing it; ``abandon`` then ends the stream with frames of the caller's
   choosing (the chat dialect's error), once, for every follower;
4. a store it cannot reach raises ``StoreUnavailable``.

The store is an interface (``ReplayStore``); ``MemoryReplayStore`` is the embedded default, a
bounded ring in one process (``rawsse.redis.RedisReplayStore`` shares streams between processes
and machines):

1. at most ``max_events_per_stream`` frames per stream (the oldest are dropped first),
2. at most ``max_total_bytes`` across streams, counting what the store holds in memory, not only
   the frames' bytes: frames of the oldest streams are dropped first, a finished stream left
   without frames is forgotten, and past that the oldest finished streams are forgotten,
3. a finished stream is kept ``keep_after_end_s`` seconds, then forgotten.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio

from rawsse._errors import RawsseError

__all__ = [
    "MemoryReplayStore",
    "ProducerLost",
    "Replay",
    "ReplayGap",
    "ReplayStore",
    "StoreUnavailable",
]

# What the store holds besides the frames' own bytes, as counted against ``max_total_bytes``
# (upper bounds, measured with tracemalloc on CPython 3.11): per frame, its bytes object header
# and list slot, and for ids that are not consecutive numbers its event id and index entry; per
# stream, its log, deque, index, key and ended mark.
_FRAME_OVERHEAD = 200
_STREAM_OVERHEAD = 1200


@dataclass(frozen=True, slots=True)
class Replay:
    """Where a replay starts: ``first_id`` (None if nothing to replay yet), whether frames the
    client asked for are no longer kept (``gap``), the ``tag`` the stream was created with, and
    whether the stream is finished (``ended``: nothing will follow what is kept)."""

    first_id: str | None
    gap: bool
    tag: str = ""
    ended: bool = False


class ReplayGap(RawsseError):
    """``follow`` found frames missing after ``last_id``, the last frame it yielded (None if it
    yielded none): trimmed before the follower got to them, or never stored."""

    def __init__(self, key: str, last_id: str | None) -> None:
        super().__init__(f"frames of stream {key!r} after id {last_id} are no longer kept")
        self.key = key
        self.last_id = last_id


class ProducerLost(RawsseError):
    """The process generating stream ``key`` stopped without finishing it; ``last_id`` is the
    last frame stored (and yielded). End the stream with ``ReplayStore.abandon``."""

    def __init__(self, key: str, last_id: str | None) -> None:
        super().__init__(f"the producer of stream {key!r} is gone (last id {last_id})")
        self.key = key
        self.last_id = last_id


class StoreUnavailable(RawsseError):
    """The replay store cannot be reached now (a shared store's server is down or too slow)."""


class ReplayStore(Protocol):
    """What a resumable stream needs from storage (in memory, Redis Streams, ...)."""

    async def create(self, key: str, *, tag: str = "") -> None:
        """Start an empty stream ``key`` (followers may attach before its first frame);
        ``tag`` is a short label kept with it and returned by ``plan``."""

    def append_nowait(self, key: str, event_id: str, frame: bytes) -> bool | None:
        """Add ``frame`` (complete frame bytes) with ``event_id`` to stream ``key``, without
        waiting (a network store queues it, within a bound, and sends it in a batch). True
        asks the producer to ``await drain()`` before it adds more."""

    async def drain(self) -> None:
        """Wait until the store's queue is back under its mark (a network store; it bounds
        the wait itself, then drops what does not fit, and counts it)."""

    async def finish(self, key: str) -> None:
        """Mark stream ``key`` ended: followers stop after its last frame."""

    async def exists(self, key: str) -> bool:
        """True while stream ``key`` is known to the store."""

    async def plan(self, key: str, last_id: str | None) -> Replay:
        """Describe what ``follow(key, last_id)`` will replay."""

    def follow(self, key: str, last_id: str | None) -> AsyncIterator[bytes]:
        """Frames after ``last_id`` (all if None), then live frames until the stream ends.

        Raises ``ReplayGap``, ``ProducerLost`` or ``StoreUnavailable`` as the module says."""

    async def abandon(
        self, key: str, last_id: str | None, frames: Sequence[tuple[str, bytes]]
    ) -> bool:
        """End stream ``key`` with ``frames`` (event id, frame) if its last frame is still
        ``last_id`` and it is not finished (its producer is gone). True if this call ended
        it."""


class _Log:
    """One stream's frames, oldest first, and their event ids.

    Compact, as a held stream keeps it for its whole life: the frames in a list (a deque once
    one is dropped from the front), and the event ids, while they are consecutive numbers (a
    chat stream's 1, 2, 3 ...), only as the first one: the others are computed. Ids of any
    other form switch the log to a list of ids and an index (``_index_ids``).
    """

    __slots__ = (
        "appended",
        "dropped",
        "ended",
        "entries",
        "first_number",
        "ids",
        "index",
        "tag",
    )

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        # The frames; frame i has the store's seq number ``dropped + i`` (increasing by one).
        # A list until a frame is dropped from the front (a deque from then on): a stream's
        # first frames then cost a small list, not a deque's 760 bytes, per held stream.
        self.entries: list[bytes] | deque[bytes] = []
        # Numbered ids: seq s has id ``first_number + s`` (None until the first frame).
        self.first_number: int | None = None
        # Other ids: each frame's, beside ``entries``, and the seq of each id kept.
        self.ids: list[str] | deque[str] | None = None
        self.index: dict[str, int] | None = None
        self.dropped = 0  # frames dropped from the front
        self.ended = False
        self.appended: anyio.Event | None = None

    @property
    def next_seq(self) -> int:
        return self.dropped + len(self.entries)

    def append(self, event_id: str, frame: bytes) -> None:
        seq = self.next_seq
        if self.ids is None:
            first = self.first_number
            if first is None and seq == 0 and _is_number(event_id):
                self.first_number = int(event_id)
            elif first is None or event_id != str(first + seq):
                self._index_ids()
        self.entries.append(frame)
        if self.ids is not None and self.index is not None:
            self.ids.append(event_id)
            self.index[event_id] = seq

    def _index_ids(self) -> None:
        """Keep every id as it is from now on (an id that is not the next number came)."""
        first = self.first_number or 0
        ids = [str(first + self.dropped + i) for i in range(len(self.entries))]
        self.index = {event_id: self.dropped + i for i, event_id in enumerate(ids)}
        self.ids = ids if isinstance(self.entries, list) else deque(ids)

    def event_id(self, index: int) -> str:
        """The event id of ``entries[index]``."""
        if self.ids is not None:
            return self.ids[index]
        return str((self.first_number or 0) + self.dropped + index)

    def drop_oldest(self) -> int:
        """Drop the oldest frame; returns the bytes it was counted for."""
        entries = self.entries
        if isinstance(entries, list):
            entries = self.entries = deque(entries)
            if self.ids is not None:
                self.ids = deque(self.ids)
        frame = entries.popleft()
        if self.ids is not None and self.index is not None:
            ids = self.ids
            assert isinstance(ids, deque)
            self.index.pop(ids.popleft(), None)
        self.dropped += 1
        return len(frame) + _FRAME_OVERHEAD

    @property
    def nbytes(self) -> int:
        """The bytes the log is counted for (computed when it is forgotten, not kept: an int
        per held stream)."""
        return (
            _STREAM_OVERHEAD
            + _FRAME_OVERHEAD * len(self.entries)
            + sum(len(frame) for frame in self.entries)
        )

    def wake(self) -> None:
        if self.appended is not None:
            self.appended.set()
            self.appended = None

    def seq_of(self, event_id: str) -> int | None:
        """The seq of the kept frame with id ``event_id``, None if none is."""
        if self.index is not None:
            return self.index.get(event_id)
        if self.first_number is None or not _is_number(event_id):
            return None
        seq = int(event_id) - self.first_number
        return seq if self.dropped <= seq < self.next_seq else None

    def start_seq(self, last_id: str | None) -> tuple[int, bool]:
        """The first seq to replay and whether frames before it are lost."""
        first_kept = self.dropped
        if last_id is None:
            return first_kept, self.dropped > 0
        seq = self.seq_of(last_id)
        if seq is not None:
            return seq + 1, False
        # Unknown id: either dropped from the ring or never ours. Replay what we have.
        return first_kept, True


def _is_number(event_id: str) -> bool:
    """Whether ``event_id`` is a number written the one way ``str(int)`` writes it."""
    return (
        event_id.isascii()
        and event_id.isdigit()
        and (event_id[0] != "0" or len(event_id) == 1)
        and len(event_id) < 19
    )


class MemoryReplayStore:
    """A bounded in-memory ``ReplayStore`` (one per process)."""

    def __init__(
        self,
        *,
        max_events_per_stream: int = 10_000,
        max_total_bytes: int = 64 * 1024 * 1024,
        keep_after_end_s: float = 300.0,
    ) -> None:
        if max_events_per_stream <= 0 or max_total_bytes <= 0 or keep_after_end_s < 0:
            raise ValueError("replay store limits must be positive")
        self.max_events_per_stream = max_events_per_stream
        self.max_total_bytes = max_total_bytes
        self.keep_after_end_s = keep_after_end_s
        # Every stream kept (a plain dict: an OrderedDict's links cost ~50 bytes per stream,
        # and the order bytes are reclaimed in is ``_reclaim_order``'s).
        self._logs: dict[str, _Log] = {}
        # Finished streams in the order they finished: the order in which they expire.
        self._ended: OrderedDict[str, float] = OrderedDict()
        # Streams holding frames, oldest first: where bytes are reclaimed from, in O(1) each.
        self._reclaim_order: deque[str] = deque()
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._logs)

    async def exists(self, key: str) -> bool:
        """True while stream ``key`` is kept."""
        return self.holds(key)

    def holds(self, key: str) -> bool:
        """``exists`` without a checkpoint."""
        self._expire()
        return key in self._logs

    async def create(self, key: str, *, tag: str = "") -> None:
        """Start an empty stream ``key`` so followers can attach before its first frame."""
        self.create_nowait(key, tag=tag)

    def create_nowait(self, key: str, *, tag: str = "") -> None:
        """``create`` without a checkpoint."""
        if key not in self._logs:
            self._new_log(key).tag = tag

    async def drain(self) -> None:
        """Nothing to wait for: the ring takes every append at once."""

    async def append(self, key: str, event_id: str, frame: bytes) -> None:
        """Add one frame to stream ``key`` (created on first append)."""
        self.append_nowait(key, event_id, frame)

    def append_nowait(self, key: str, event_id: str, frame: bytes) -> None:
        """``append`` without a checkpoint, for producers on the hot path."""
        log = self._logs.get(key)
        if log is None:
            log = self._new_log(key)
        if not log.entries:
            order = self._reclaim_order
            order.append(key)
            if len(order) > 2 * len(self._logs) + 1024:
                # Forgotten streams leave their keys behind; sweep them out now and then.
                logs = self._logs
                self._reclaim_order = deque(k for k in order if k in logs and logs[k].entries)
                self._reclaim_order.append(key)
        log.append(event_id, frame)
        self.total_bytes += len(frame) + _FRAME_OVERHEAD
        if len(log.entries) > self.max_events_per_stream:
            self.total_bytes -= log.drop_oldest()
        if self.total_bytes > self.max_total_bytes:
            self._reclaim()
        log.wake()

    async def finish(self, key: str) -> None:
        """Mark stream ``key`` ended; it is kept ``keep_after_end_s`` more seconds."""
        self.finish_nowait(key)

    def finish_nowait(self, key: str) -> None:
        """``finish`` without a checkpoint."""
        log = self._logs.get(key)
        if log is None:
            log = self._new_log(key)
        log.ended = True
        self._ended[key] = time.monotonic()
        self._ended.move_to_end(key)
        log.wake()

    async def plan(self, key: str, last_id: str | None) -> Replay:
        """Where ``follow(key, last_id)`` starts, and whether there is a gap before it."""
        return self.plan_nowait(key, last_id)

    def plan_nowait(self, key: str, last_id: str | None) -> Replay:
        """``plan`` without a checkpoint."""
        log = self._logs.get(key)
        if log is None:
            return Replay(None, last_id is not None)
        seq, gap = log.start_seq(last_id)
        index = seq - log.dropped
        first = log.event_id(index) if 0 <= index < len(log.entries) else None
        return Replay(first, gap, log.tag, log.ended)

    async def abandon(
        self, key: str, last_id: str | None, frames: Sequence[tuple[str, bytes]]
    ) -> bool:
        """End stream ``key`` with ``frames`` (event id, frame) if its last frame is still
        ``last_id`` and it is not finished. (In one process a producer always finishes its
        own stream, so this serves callers that decided otherwise.)"""
        log = self._logs.get(key)
        if log is None or log.ended:
            return False
        last = log.event_id(len(log.entries) - 1) if log.entries else None
        if last != last_id:
            return False
        for event_id, frame in frames:
            self.append_nowait(key, event_id, frame)
        self.finish_nowait(key)
        return True

    async def follow(self, key: str, last_id: str | None) -> AsyncIterator[bytes]:
        """Replay after ``last_id``, then follow live frames until the stream is finished."""
        log = self._logs.get(key)
        if log is None:
            return
        seq, _ = log.start_seq(last_id)
        yielded = last_id
        while True:
            index = seq - log.dropped
            if index < 0:
                # Trimmed (the ring's bounds) while we waited: frames we owe are gone.
                raise ReplayGap(key, yielded)
            while index < len(log.entries):
                frame = log.entries[index]
                yielded = log.event_id(index)
                seq += 1
                yield frame
                # The log may have been trimmed while we yielded; recompute our position.
                index = seq - log.dropped
                if index < 0:
                    raise ReplayGap(key, yielded)
            if log.ended:
                return
            if log.appended is None:
                log.appended = anyio.Event()
            # No deadline: the producer appends or finishes; a departing client cancels us.
            await log.appended.wait()

    def _new_log(self, key: str) -> _Log:
        self._expire()
        log = self._logs[key] = _Log()
        self.total_bytes += _STREAM_OVERHEAD
        if self.total_bytes > self.max_total_bytes:
            self._reclaim()
        return log

    def _forget(self, key: str) -> None:
        self._ended.pop(key, None)
        log = self._logs.pop(key, None)
        if log is not None:
            self.total_bytes -= log.nbytes

    def _expire(self) -> None:
        now = time.monotonic()
        ended = self._ended
        while ended:
            key, ended_at = next(iter(ended.items()))
            if now - ended_at < self.keep_after_end_s:
                return
            self._forget(key)

    def _reclaim(self) -> None:
        # Drop the oldest frames of the oldest streams until the store is within its budget.
        # Amortised O(1) per frame: each stream is in the order once per run of frames.
        order = self._reclaim_order
        while self.total_bytes > self.max_total_bytes and order:
            key = order[0]
            log = self._logs.get(key)
            if log is None or not log.entries:
                order.popleft()
                continue
            self.total_bytes -= log.drop_oldest()
            if not log.entries:
                order.popleft()
                if log.ended:
                    self._forget(key)  # nothing left to replay: its bookkeeping goes too
        # Still over (finished streams without frames, or many streams' bookkeeping): forget
        # finished streams, those that ended first first. Live streams are never forgotten.
        ended = self._ended
        while self.total_bytes > self.max_total_bytes and ended:
            self._forget(next(iter(ended)))
