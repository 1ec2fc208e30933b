"""The process's counters: plain integers bumped on hot paths, read by ``rawsse.metrics``.

Contract: a leaf module (no imports of rawsse) so that the HTTP driver (``ServerStats``) and the
streams layer (``StreamMetrics``) can both count without importing each other or the metrics
page. One event loop per process, so plain attribute increments need no locks.
"""

from __future__ import annotations

__all__ = ["METRICS", "ServerStats", "StreamMetrics"]


class ServerStats:
    """Plain counters the driver updates; the metrics layer reads and renders them."""

    __slots__ = ("bytes_sent", "connections_active", "connections_total", "requests_by_status")

    def __init__(self) -> None:
        self.connections_active = 0
        self.connections_total = 0
        self.bytes_sent = 0
        self.requests_by_status: dict[int, int] = {}

    def count_response(self, status: int) -> None:
        """Count one response with ``status``."""
        by_status = self.requests_by_status
        by_status[status] = by_status.get(status, 0) + 1


class StreamMetrics:
    """Process-wide stream counters (one event loop per process, so plain ints suffice)."""

    __slots__ = (
        "bytes_sent_total",
        "client_disconnects_total",
        "count_heartbeat_callback",
        "events_total",
        "heartbeats_total",
        "replay_errors_total",
        "slow_client_evictions_total",
        "streams_active",
        "streams_total",
    )

    def __init__(self) -> None:
        self.streams_active = 0
        self.streams_total = 0
        self.events_total = 0
        self.heartbeats_total = 0
        self.client_disconnects_total = 0
        self.slow_client_evictions_total = 0
        # Appends or reads a shared replay store (or broadcast bus) could not do.
        self.replay_errors_total = 0
        # Bytes written by servers that have no ServerStats of their own to report.
        self.bytes_sent_total = 0
        # Made once: every stream's heartbeat timer holds it (a bound method is 64 bytes).
        self.count_heartbeat_callback = self.count_heartbeat

    def count_heartbeat(self) -> None:
        """Count one heartbeat frame written."""
        self.heartbeats_total += 1

    def snapshot(self) -> dict[str, int]:
        """All counters as a dict (for tests and JSON)."""
        return {
            name: getattr(self, name)
            for name in self.__slots__
            if name.endswith("_total") or name == "streams_active"
        }


# The process's stream counters. Like prometheus_client's REGISTRY, one per process.
METRICS = StreamMetrics()
