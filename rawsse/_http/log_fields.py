"""What a request contributes to a log line: printable, unforgeable, without credentials.

Contract: ``loggable_target(target)`` is the request-target as one log field: the values of
credential parameters in its query are replaced by ``[redacted]``, matched on the *decoded*
parameter name (``?%6Bey=`` is ``key`` to the application, so it is to the redaction too), and
every byte that could forge or break a line is escaped: control characters (CR and LF
included) and bytes above 0x7e as ``\\xNN``, a backslash as ``\\\\``, a double quote (the access
log's field delimiter) as ``\\x22``. The result is pure ASCII.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = ["escape_field", "loggable_target"]

# Query parameters whose values are credentials (Gemini's ?key=, signed URLs, tokens).
_SECRET_NAMES = frozenset(
    (
        "key",
        "api_key",
        "apikey",
        "api-key",
        "token",
        "access_token",
        "resume_token",
        "auth",
        "password",
        "sig",
        "signature",
    )
)
_QUERY_SEPARATOR = re.compile(rb"([&;])")


def escape_field(raw: bytes) -> str:
    """``raw`` as printable ASCII that cannot end the line or the quoted field it is in."""
    return raw.decode("latin-1").encode("unicode_escape").decode("ascii").replace('"', "\\x22")


def _redact_query(query: bytes) -> bytes:
    parts = _QUERY_SEPARATOR.split(query)
    for index in range(0, len(parts), 2):  # the separators are at the odd indices
        name, equals, _ = parts[index].partition(b"=")
        if equals and unquote_plus(name.decode("latin-1")).strip().lower() in _SECRET_NAMES:
            parts[index] = name + b"=[redacted]"
    return b"".join(parts)


def loggable_target(target: bytes) -> str:
    """The request-target for a log line (see the module's contract)."""
    path, sep, query = target.partition(b"?")
    if sep:
        query = _redact_query(query)
    return escape_field(path + sep + query)
