"""rawsse: a low-level Server-Sent Events server framework (h11 + anyio + orjson).

The client's reconnecting ``stream()`` is ``rawsse.client.stream``: ``rawsse.stream`` is the
module that defines ``EventStream``.
"""

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
from rawsse.errors import ClientDisconnected, HTTPError, RawsseError, SlowClientEvicted
from rawsse.limits import ServerLimits
from rawsse.metrics import METRICS, StreamMetrics, metrics_handler, render_prometheus
from rawsse.parser import EventParser, EventTooLarge
from rawsse.replay import MemoryReplayStore, Replay, ReplayStore
from rawsse.request import Headers, Request
from rawsse.response import JSONResponse, Response, StreamingResponse
from rawsse.server import Server, run
from rawsse.sse import Event, encode_comment, encode_event, encode_json_data, encode_retry
from rawsse.stream import EventStream
from rawsse.ticker import Ticker, sleep

__version__ = "0.1.0"

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
