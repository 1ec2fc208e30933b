"""Server limits: one frozen value object, every default with where it comes from.

Contract: the connection driver and the server read their limits only from ``ServerLimits``.
Sizes end in ``_bytes``, durations in ``_s``; ``0`` or ``None`` where documented means "off".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServerLimits"]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Limits that protect the server from slow, large or numerous clients."""

    # h11's default and what nginx/uvicorn accept for a whole header section: 16 KiB.
    max_header_bytes: int = 16 * 1024
    # Apache's LimitRequestFields default is 100.
    max_headers: int = 100
    # Chat requests carry whole conversations; 4 MiB covers long contexts without inviting abuse.
    max_body_bytes: int = 4 * 1024 * 1024
    # Slowloris guard: the whole header section must arrive within this time (nginx: 60 s,
    # Apache's mod_reqtimeout: 20-40 s; we are stricter because honest clients send it at once).
    header_timeout_s: float = 10.0
    # A slow body upload gets the same treatment as slow headers.
    body_timeout_s: float = 30.0
    # Idle time between keep-alive requests before the server closes (uvicorn's default is 5 s).
    keepalive_timeout_s: float = 5.0
    # Concurrent connections; beyond it new ones get 503 with Retry-After. 0 = no limit.
    max_connections: int = 0
    # How long a write may wait for the peer to take bytes before the client counts as gone.
    send_timeout_s: float = 30.0
    # A streaming body buffers up to this much before the producer has to wait (backpressure).
    write_buffer_bytes: int = 64 * 1024
    # On shutdown, how long open requests and streams get to finish before they are cancelled.
    shutdown_grace_s: float = 5.0
    # TCP keepalive probes after this much idle time (SO_KEEPALIVE + TCP_KEEPIDLE), every
    # third of it (TCP_KEEPINTVL), 3 times (TCP_KEEPCNT): finds peers that vanished without a
    # FIN (a crashed NAT, a pulled cable). None = the OS default (off: 2 hours if enabled).
    tcp_keepalive_s: float | None = None
    # Linux TCP_USER_TIMEOUT: drop a connection whose sent data stays unacknowledged this long.
    tcp_user_timeout_s: float | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_header_bytes",
            "max_headers",
            "max_body_bytes",
            "write_buffer_bytes",
            "header_timeout_s",
            "body_timeout_s",
            "keepalive_timeout_s",
            "send_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_connections < 0:
            raise ValueError("max_connections must be >= 0 (0 = no limit)")
        for name in ("tcp_keepalive_s", "tcp_user_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None for the OS default)")
        if self.shutdown_grace_s < 0:
            raise ValueError("shutdown_grace_s must be >= 0")
