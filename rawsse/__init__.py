"""rawsse: a low-level Server-Sent Events server framework (h11 + anyio + orjson).

Every name below is imported on first use, so ``import rawsse`` is cheap and a server never
loads the client, the load generator or the wire inspector. The SSE client lives in
``rawsse.client`` (``EventSource``, ``connect``), the chat layer in ``rawsse.chat``.
"""

from typing import TYPE_CHECKING

from rawsse._lazy import lazy_exports

if TYPE_CHECKING:
    from rawsse._errors import (
        ClientDisconnected,
        HTTPError,
        RawsseError,
        SlowClientEvicted,
    )
    from rawsse._http.limits import ServerLimits
    from rawsse._runtime.ticker import Ticker, sleep
    from rawsse._version import __version__ as __version__
    from rawsse.app import App
    from rawsse.broadcast import Broadcast
    from rawsse.client import (
        EventSource,
        SSEConnectionError,
        SSEContentTypeError,
        SSEError,
        SSEProtocolError,
        SSEResponse,
        SSEStatusError,
        SSETimeoutError,
        connect,
    )
    from rawsse.metrics import (
        METRICS,
        StreamMetrics,
        metrics_handler,
        render_prometheus,
    )
    from rawsse.parser import EventParser, EventTooLarge
    from rawsse.replay import (
        MemoryReplayStore,
        Replay,
        ReplayStore,
    )
    from rawsse.request import Headers, Request
    from rawsse.response import (
        JSONResponse,
        Response,
        StreamingResponse,
    )
    from rawsse.server import Server, run
    from rawsse.sse import (
        Event,
        encode_comment,
        encode_event,
        encode_json_data,
        encode_retry,
    )
    from rawsse.stream import EventStream

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "rawsse._errors": ("ClientDisconnected", "HTTPError", "RawsseError", "SlowClientEvicted"),
        "rawsse._http.limits": ("ServerLimits",),
        "rawsse._runtime.ticker": ("Ticker", "sleep"),
        "rawsse._version": ("__version__",),
        "rawsse.app": ("App",),
        "rawsse.broadcast": ("Broadcast",),
        "rawsse.client": (
            "EventSource",
            "SSEConnectionError",
            "SSEContentTypeError",
            "SSEError",
            "SSEProtocolError",
            "SSEResponse",
            "SSEStatusError",
            "SSETimeoutError",
            "connect",
        ),
        "rawsse.metrics": ("METRICS", "StreamMetrics", "metrics_handler", "render_prometheus"),
        "rawsse.parser": ("EventParser", "EventTooLarge"),
        "rawsse.replay": ("MemoryReplayStore", "Replay", "ReplayStore"),
        "rawsse.request": ("Headers", "Request"),
        "rawsse.response": ("JSONResponse", "Response", "StreamingResponse"),
        "rawsse.server": ("Server", "run"),
        "rawsse.sse": (
            "Event",
            "encode_comment",
            "encode_event",
            "encode_json_data",
            "encode_retry",
        ),
        "rawsse.stream": ("EventStream",),
    },
)

__all__ = [
    "METRICS",
    "App",
    "Broadcast",
    "ClientDisconnected",
    "Event",
    "EventParser",
    "EventSource",
    "EventStream",
    "EventTooLarge",
    "HTTPError",
    "Headers",
    "JSONResponse",
    "MemoryReplayStore",
    "RawsseError",
    "Replay",
    "ReplayStore",
    "Request",
    "Response",
    "SSEConnectionError",
    "SSEContentTypeError",
    "SSEError",
    "SSEProtocolError",
    "SSEResponse",
    "SSEStatusError",
    "SSETimeoutError",
    "Server",
    "ServerLimits",
    "SlowClientEvicted",
    "StreamMetrics",
    "StreamingResponse",
    "Ticker",
    "connect",
    "encode_comment",
    "encode_event",
    "encode_json_data",
    "encode_retry",
    "metrics_handler",
    "render_prometheus",
    "run",
    "sleep",
]
