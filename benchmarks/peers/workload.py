"""The one workload every peer server serves, so their figures compare.

``POST /stream?n=200&delay=0&hold=0&hb=15``:
- ``n`` events, each an OpenAI ``chat.completion.chunk`` built as a dict for that event and
  encoded with orjson (every Python peer uses orjson, so JSON cost is the same for all; Node uses
  ``JSON.stringify``), then ``data: [DONE]``.
- ``delay`` seconds between events (the paced scenario; 0 = burst, as fast as the server can),
  on a fixed schedule (event i is due at start + i * delay), as tokens from a model would be:
  a late event does not push the later ones back.
- ``hold`` seconds with no data before the ``[DONE]`` frame: an idle stream for memory and
  heartbeat measurements (use with ``n=0``).
- ``hb`` heartbeat interval in seconds, each server's own mechanism (0 = off where the server
  allows it).
The request body is read and ignored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

CREATED = 1700000000
DONE_FRAME = b"data: [DONE]\n\n"


def chunk_dict(i: int) -> dict[str, Any]:
    """The event payload for event ``i`` (a fresh dict per event, as a model server builds it)."""
    return {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "bench",
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "delta": {"content": f"token{i} "},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }


class Params:
    """The query parameters of one request."""

    __slots__ = ("delay", "hb", "hold", "n")

    def __init__(self, n: int = 200, delay: float = 0.0, hold: float = 0.0, hb: float = 15.0):
        self.n = n
        self.delay = delay
        self.hold = hold
        self.hb = hb


def params_from_query(query: str | bytes) -> Params:
    """Parse ``n``, ``delay``, ``hold``, ``hb`` from a query string."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    q = parse_qs(query)

    def get(name: str, default: str) -> str:
        values = q.get(name)
        return values[0] if values else default

    return Params(int(get("n", "200")), float(get("delay", "0")), float(get("hold", "0")),
                  float(get("hb", "15")))


def params_from_mapping(m: Any) -> Params:
    """Parse from a mapping of query parameters (frameworks' ``request.query``)."""
    return Params(int(m.get("n", 200)), float(m.get("delay", 0)), float(m.get("hold", 0)),
                  float(m.get("hb", 15)))
