"""Resume and broadcast across processes and machines, through Redis.

``RedisBus`` is one process's link to Redis (open it with ``async with bus:``, or let
``rawsse serve --redis URL`` open it); ``RedisReplayStore(bus)`` is the replay store to give
``mount_chat``, and ``Broadcast(channel=..., bus=bus)`` reaches subscribers in every process.
The Redis client (coredis, ``pip install 'rawsse[redis]'``) is imported only when a bus
connects. See docs/scaling.md.
"""

from rawsse.redis._bus import REDIS_URL_ENV, RedisBus, RedisUnavailable, probe, redact_url
from rawsse.redis._store import RedisReplayStore

__all__ = [
    "REDIS_URL_ENV",
    "RedisBus",
    "RedisReplayStore",
    "RedisUnavailable",
    "probe",
    "redact_url",
]
