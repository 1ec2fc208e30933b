"""The one place rawsse touches JSON: orjson behind two functions.

Contract: ``dumps`` returns compact UTF-8 bytes with no ASCII escaping and never a raw
newline (orjson escapes control characters inside strings), so a dumped value always fits on
one SSE ``data:`` line. ``loads`` raises ``JSONDecodeError`` (a ``ValueError``) on bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


# Serialise a value to compact UTF-8 JSON bytes. A plain alias, not a wrapper: it is on the
# per-event hot path, and the call layer costs ~30 ns there.
dumps: Callable[[Any], bytes] = orjson.dumps


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON text; raises ``JSONDecodeError`` (a ``ValueError``) when it is not JSON."""
    return orjson.loads(data)
