"""API keys: finding the one a request presents, and checking it in constant time.

Contract: ``presented_key`` reads a key from where a vendor's SDK sends it (an ``Authorization:
Bearer`` header, a vendor header such as ``x-api-key`` or ``x-goog-api-key``, or a query
parameter such as Gemini's ``key``); ``check_api_key`` compares it with every configured key
using ``hmac.compare_digest`` and without stopping at the first match, so the time taken says
nothing about which key, or how much of one, matched. No keys configured means no auth.
``authenticate`` combines them and raises ``ChatError`` 401. ``checked_keys`` is how keys are
configured: it refuses a lone string (each of its characters would be a key) and any key no
client could present intact (``key_problem``).

Resume tokens let a browser resume a keyed stream without putting a key in a URL
(``EventSource`` cannot send headers). ``resume_token(secret, stream_id)`` is an HMAC-SHA256 of
the stream id under a secret derived from the configured keys (``resume_secret``): unguessable
without a key, valid for that one stream only, and the same in every process and on every
machine that shares the keys, so a resume can land on any of them. It names no key and reveals
nothing about one. ``check_resume_token`` compares in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Collection, Mapping

from rawsse.chat.errors import ChatError

__all__ = [
    "authenticate",
    "check_api_key",
    "check_resume_token",
    "checked_keys",
    "key_problem",
    "presented_key",
    "resume_secret",
    "resume_token",
]

# Domain separation: these digests are resume tokens and nothing else.
_SECRET_LABEL = b"rawsse resume-token secret\x00"
_TOKEN_LABEL = b"rawsse resume token\x00"


def key_problem(key: object) -> str | None:
    """Why ``key`` cannot be an API key, or None when it can: a key is a non-empty string of
    printable ASCII without spaces at either end, what an ``Authorization`` header carries
    intact (the key a request presents is read with its surrounding spaces removed)."""
    if not isinstance(key, str):
        return f"an API key is a string, got {type(key).__name__}"
    if not key:
        return "an API key cannot be empty"
    if not (key.isascii() and key.isprintable()):
        return "an API key is printable ASCII (a header cannot carry it intact otherwise)"
    if key != key.strip():
        return "an API key cannot start or end with a space"
    return None


def checked_keys(api_keys: Collection[str]) -> tuple[str, ...]:
    """``api_keys`` as a tuple, or ``ValueError`` naming the first that no client could present
    (``key_problem``); ``TypeError`` for a lone string, whose characters would each be a key."""
    if isinstance(api_keys, str):
        raise TypeError("api_keys is a collection of keys: write api_keys=[key], not api_keys=key")
    keys = tuple(api_keys)
    for key in keys:
        if (problem := key_problem(key)) is not None:
            raise ValueError(problem)
    return keys


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


def resume_secret(keys: Collection[str]) -> bytes | None:
    """The secret resume tokens are made with: derived from every configured key (in any
    order), so processes sharing the keys agree; None when no keys are configured (auth off)."""
    if not keys:
        return None
    material = b"\x00".join(sorted(key.encode() for key in keys))
    return hmac.new(_SECRET_LABEL, material, hashlib.sha256).digest()


def resume_token(secret: bytes, stream_id: str) -> str:
    """The resume token of stream ``stream_id``: 43 URL-safe characters (256 bits)."""
    digest = hmac.new(secret, _TOKEN_LABEL + stream_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_resume_token(secret: bytes | None, stream_id: str, presented: str | None) -> bool:
    """True when ``presented`` is the resume token of ``stream_id`` (constant-time compare)."""
    if secret is None or not presented:
        return False
    expected = resume_token(secret, stream_id).encode()
    return hmac.compare_digest(expected, presented.encode(errors="replace"))
