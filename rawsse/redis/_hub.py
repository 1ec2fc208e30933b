"""The hub: one Pub/Sub connection per process, feeding its followers and broadcasts.

Contract: a channel is subscribed while something in the process listens to it (``listen``
for a replay stream's follower, ``attach`` for a broadcast channel), so a publish reaches each
process once, whatever its number of clients. Pub/Sub is at most once, so nothing here trusts
it alone:

1. a follower's queue is bounded (``Listener``); past it, and after a re-subscription (the
   connection was lost: what was published meanwhile is not coming), the follower is told to
   catch up from the stream's log (``RESYNC``);
2. a broadcast channel's feed delivers ids in order, once each: an id that skips ahead, or a
   re-subscription, makes it read the channel's history for what it missed, then deliver what
   arrived meanwhile;
3. the connection comes back by itself, backing off from 0.1 s to 5 s; ``upkeep`` (every
   couple of seconds) subscribes what is wanted but missing and drops what nobody uses.

Dispatch is synchronous and never waits: a message is parsed once and put on each listener.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from rawsse.replay import StoreUnavailable

if TYPE_CHECKING:
    from rawsse.redis._bus import RedisBus

__all__ = [
    "BACKOFF_FIRST_S",
    "BACKOFF_MAX_S",
    "RESYNC",
    "Batch",
    "Hub",
    "Listener",
    "describe",
    "split_frames",
]

logger = logging.getLogger("rawsse.redis")

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
# Pub/Sub messages a listener holds before it is told to catch up from the log instead.
_LISTENER_QUEUE = 256


def describe(exc: BaseException) -> str:
    """A one-line reason for ``exc`` (the innermost of an exception group)."""
    inner = getattr(exc, "exceptions", None)  # an exception group (Python 3.11+)
    while inner:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def split_frames(lengths: bytes, frames: bytes) -> list[bytes]:
    """Frames stored end to end, cut at ``lengths`` (``b"12,40"``)."""
    out = []
    offset = 0
    for length in lengths.split(b","):
        size = int(length)
        out.append(frames[offset : offset + size])
        offset += size
    return out


class Batch:
    """One appended batch of a replay stream as Pub/Sub carries it: frames ``first`` ...
    ``first + len(frames) - 1`` of the stream, in ``epoch``, and whether it ended there."""

    __slots__ = ("end", "epoch", "first", "frames")

    def __init__(self, epoch: bytes, first: int, end: bool, frames: list[bytes]) -> None:
        self.epoch = epoch
        self.first = first
        self.end = end
        self.frames = frames

    @classmethod
    def parse(cls, payload: bytes) -> Batch:
        """Decode a message the append script published."""
        epoch, first, end, lengths, rest = payload.split(b"\n", 4)
        frames = split_frames(lengths, rest) if lengths else []
        return cls(epoch, int(first), end == b"1", frames)


# What a listener yields instead of a batch when it missed messages: catch up from the log.
RESYNC = Batch(b"", 0, False, [])


class Listener:
    """The Pub/Sub batches of one replay stream for one follower, bounded."""

    __slots__ = ("_event", "_queue")

    def __init__(self) -> None:
        self._queue: deque[Batch] = deque()
        self._event: anyio.Event | None = None

    def put(self, batch: Batch) -> None:
        """Queue ``batch`` (the hub calls this); past the bound, ask for a catch-up."""
        queue = self._queue
        if len(queue) >= _LISTENER_QUEUE:
            queue.clear()
            batch = RESYNC
        queue.append(batch)
        if self._event is not None:
            self._event.set()
            self._event = None

    async def get(self, timeout_s: float) -> Batch | None:
        """The next batch (``RESYNC`` to catch up), or None after ``timeout_s`` of silence."""
        if not self._queue:
            self._event = event = anyio.Event()
            with anyio.move_on_after(timeout_s):
                await event.wait()
            if not self._queue:
                return None
        return self._queue.popleft()


class _Feed:
    """A broadcast channel's live frames for this process, in order, holes filled."""

    __slots__ = ("history", "last", "pending", "recovering", "sink")

    def __init__(self, history: str, sink: Callable[[int, bytes], None]) -> None:
        self.history = history
        self.sink = sink
        self.last: int | None = None  # the last id delivered (None: nothing yet)
        self.recovering = False
        self.pending: list[tuple[int, bytes]] = []


class Hub:
    """The Pub/Sub side of a ``RedisBus`` (see the module)."""

    def __init__(self, bus: RedisBus) -> None:
        self.bus = bus
        self._pubsub: Any = None
        self._listeners: dict[bytes, set[Listener]] = {}
        self._feeds: dict[bytes, _Feed] = {}
        self._confirmed: set[bytes] = set()

    @contextlib.asynccontextmanager
    async def listen(self, channel: bytes) -> AsyncIterator[Listener]:
        """A ``Listener`` of a replay stream's ``channel`` for the block (subscribed when the
        block starts, or as soon as the hub can: readers also poll the log)."""
        listener = Listener()
        listeners = self._listeners.setdefault(channel, set())
        listeners.add(listener)
        try:
            await self._subscribe(channel)
            yield listener
        finally:
            listeners.discard(listener)

    async def attach(self, name: bytes, channel: str, sink: Callable[[int, bytes], None]) -> None:
        """Deliver broadcast ``channel`` (its Pub/Sub channel ``name``) to ``sink(id, frame)``
        from now on, in order and once each (holes filled from its history)."""
        self._feeds[name] = _Feed(channel, sink)
        await self._subscribe(name)

    def detach(self, name: bytes) -> None:
        """Stop delivering the broadcast channel ``name`` (``attach``'s undo)."""
        self._feeds.pop(name, None)

    async def _subscribe(self, channel: bytes) -> None:
        pubsub = self._pubsub
        if pubsub is None or channel in self._confirmed:
            return
        try:
            with anyio.fail_after(self.bus.command_timeout_s):
                await pubsub.subscribe(channel)
        except Exception as exc:
            # The hub subscribes every wanted channel when it reconnects; readers poll.
            logger.debug("subscribe to %r failed: %s", channel, describe(exc))

    def _wanted(self) -> list[bytes]:
        return [c for c, ls in self._listeners.items() if ls] + list(self._feeds)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the Pub/Sub connection and dispatch its messages until cancelled (reports
        started once connected, or once the first attempt failed)."""
        bus = self.bus
        backoff = 0.0
        started = False
        while True:
            try:
                async with bus._client.pubsub(retry_policy=bus._pubsub_retry) as pubsub:
                    wanted = self._wanted()
                    if wanted:
                        with anyio.fail_after(self.bus.command_timeout_s):
                            await pubsub.subscribe(*wanted)
                    self._pubsub = pubsub
                    backoff = 0.0
                    if not started:
                        started = True
                        task_status.started()
                    while True:
                        # No deadline: messages come when producers publish; the keeper
                        # notices a Redis that went away.
                        message = await pubsub.get_message(timeout=None)
                        if message is not None:
                            self._on_message(message)
            except Exception as exc:
                logger.debug("Pub/Sub connection lost: %s", describe(exc))
                if not started:
                    started = True
                    task_status.started()
            finally:
                self._pubsub = None
                self._confirmed.clear()
                self._resync_all()
            backoff = min(max(backoff * 2, BACKOFF_FIRST_S), BACKOFF_MAX_S)
            await anyio.sleep(backoff)

    def _on_message(self, message: Any) -> None:
        kind = message["type"]
        channel = message["channel"]
        if isinstance(channel, str):
            channel = channel.encode()
        if kind == "subscribe":
            if channel in self._confirmed:
                # Subscribed again after a lost connection: what was published meanwhile is
                # not coming. Followers catch up from the log, feeds from the history.
                self._resync(channel)
            self._confirmed.add(channel)
            return
        if kind == "unsubscribe":
            self._confirmed.discard(channel)
            return
        if kind != "message":
            return
        data = message["data"]
        listeners = self._listeners.get(channel)
        if listeners:
            batch = Batch.parse(data)
            for listener in list(listeners):
                listener.put(batch)
        feed = self._feeds.get(channel)
        if feed is not None:
            number, _, frame = data.partition(b"\n")
            self._on_broadcast(feed, int(number), frame)

    def _resync(self, channel: bytes) -> None:
        for listener in list(self._listeners.get(channel, ())):
            listener.put(RESYNC)
        feed = self._feeds.get(channel)
        if feed is not None and feed.last is not None and not feed.recovering:
            self._recover(feed)

    def _resync_all(self) -> None:
        for channel in list(self._listeners) + list(self._feeds):
            self._resync(channel)

    def _on_broadcast(self, feed: _Feed, number: int, frame: bytes) -> None:
        last = feed.last
        if feed.recovering:
            if len(feed.pending) < _LISTENER_QUEUE:
                feed.pending.append((number, frame))
            return
        if last is None or number == last + 1 or (number == 1 and last > 1):
            # In order (or the first we see, or the channel started over: its counter expired
            # or Redis lost it).
            feed.last = number
            feed.sink(number, frame)
        elif number > last + 1:
            feed.pending.append((number, frame))
            self._recover(feed)
        # number <= last: seen already (a message that raced a recovery).

    def _recover(self, feed: _Feed) -> None:
        tg = self.bus._tg
        if tg is None:
            return
        feed.recovering = True
        tg.start_soon(self._fill, feed)

    async def _fill(self, feed: _Feed) -> None:
        # Deliver what the history has between the last delivered id and the live messages
        # that arrived since, then those.
        try:
            after = feed.last or 0
            _, entries = await self.bus.history(feed.history, after, self.bus._history_len)
            for number, frame in entries:
                if number > (feed.last or 0):
                    feed.sink(number, frame)
                    feed.last = number
        except StoreUnavailable:
            pass
        finally:
            feed.recovering = False
            pending, feed.pending = feed.pending, []
            missed = 0
            for number, frame in pending:
                last = feed.last or 0
                if number <= last:
                    continue
                missed += number - last - 1
                feed.last = number
                feed.sink(number, frame)
            if missed:
                self.bus._failed("broadcast history (trimmed)", None, missed)

    async def upkeep(self) -> None:
        """Drop the subscriptions nobody listens to; subscribe what is wanted but missing."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        unused = [c for c in self._confirmed if not self._listeners.get(c) and c not in self._feeds]
        for channel in unused:
            self._listeners.pop(channel, None)
            self._confirmed.discard(channel)
        wanted = [c for c in self._wanted() if c not in self._confirmed]
        try:
            with anyio.fail_after(self.bus.command_timeout_s):
                if unused:
                    await pubsub.unsubscribe(*unused)
                if wanted:
                    await pubsub.subscribe(*wanted)
        except Exception as exc:
            logger.debug("Pub/Sub upkeep failed: %s", describe(exc))
