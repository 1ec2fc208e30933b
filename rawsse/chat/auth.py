"""API keys: finding the one a request presents, and checking it in constant time.

Contract: ``presented_key`` reads a key from where a vendor's SDK sends it (an ``Authorization:
Bearer`` header, a vendor header such as ``x-api-key`` or ``x-goog-api-key``, or a query
parameter such as Gemini's ``key``); ``check_api_key`` compares it with every configured key
using ``hmac.compare_digest`` and without stopping at the first match, so the time taken says
nothing about which key, or how much of one, matched. No keys configured means no auth.
``authenticate`` combines them and raises ``ChatError`` 401.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping

from rawsse.chat.errors import ChatError

__all__ = ["authenticate", "check_api_key", "presented_key"]


def presented_key(
    headers: Mapping[str, str],
    query: Mapping[str, str] | None = None,
    *,
    header: str | None = None,
    query_param: str | None = None,
) -> str | None:
    """The key a request presents: ``header`` (lower-case name) first, then ``Authorization:
    Bearer``, then the query parameter ``query_param``; None when there is none."""
    if header is not None and (value := headers.get(header)):
        return value.strip()
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if query_param is not None and query is not None and (value := query.get(query_param)):
        return value
    return None


def check_api_key(keys: Collection[str], presented: str | None) -> bool:
    """True when ``presented`` is one of ``keys``, or when ``keys`` is empty (auth is off)."""
    if not keys:
        return True
    if presented is None:
        return False
    candidate = presented.encode()
    matched = False
    for key in keys:
        # No short-circuit: every key is compared, so timing does not reveal which one matched.
        matched |= hmac.compare_digest(candidate, key.encode())
    return matched


def authenticate(keys: Collection[str], presented: str | None) -> None:
    """Raise ``ChatError`` 401 unless ``presented`` is an accepted key (see ``check_api_key``)."""
    if not check_api_key(keys, presented):
        raise ChatError.unauthorized(presented is not None)
