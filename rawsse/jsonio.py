"""The one place rawsse touches JSON: orjson behind two functions.

Contract: ``dumps`` returns compact UTF-8 bytes with no ASCII escaping and never a raw
newline (orjson escapes control characters inside strings), so a dumped value always fits on
one SSE ``data:`` line. ``loads`` raises ``JSONDecodeError`` (a ``ValueError``) on bad input.
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> bytes:
    """Serialise ``value`` to compact UTF-8 JSON bytes."""
    return orjson.dumps(value)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON text; raises ``JSONDecodeError`` (a ``ValueError``) when it is not JSON."""
    return orjson.loads(data)
