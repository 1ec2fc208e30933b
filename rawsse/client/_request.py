"""What the client asks for, sans-io: a stream request as a browser makes it, and its redirects.

Contract: ``StreamRequest.build(url, ...)`` makes the request a client sends for an event stream
(method, headers, body), with a browser's default headers; ``request.exchange(last_event_id)``
serialises one sending of it, with ``Last-Event-ID`` when there is one. ``request.redirect(head,
hops, max_redirects)`` applies the fetch standard's redirect rules to a response head: it returns
the request to send next, ``None`` when the response is not a redirect to follow (not 301, 302,
303, 307 or 308, or no ``Location``), and raises ``SSERedirectError`` for one the client must not
follow.

The rules kept (WHATWG fetch, "HTTP-redirect fetch", and the EventSource's request):
1. The request headers are a browser's for an EventSource: ``Accept: text/event-stream``, and
   for its "no-store" cache mode ``Cache-Control: no-cache`` and ``Pragma: no-cache``. A header
   the caller gives replaces the default of that name.
2. At most ``max_redirects`` redirects are followed (fetch's limit is 20); one more is an error.
3. ``Location`` is resolved against the URL that answered; a URL whose scheme is not http or
   https is an error (never followed), as is a ``Location`` that is not a URL.
4. 301 or 302 after a POST, and 303 after anything but GET or HEAD, turn the request into a GET
   without a body (and without the headers that describe a body: ``Content-Type``,
   ``Content-Encoding``, ``Content-Language``, ``Content-Location``, ``Content-Length``).
   307 and 308 keep the method and the body.
5. A redirect to another origin (scheme, host, port) drops ``Authorization`` (as fetch does),
   and also ``Proxy-Authorization`` and ``Cookie`` (credentials the caller set by hand, which a
   browser's cookie jar would not send to another site), and a ``Host`` the caller set.
6. The redirect changes this request only: a reconnecting client starts again from its URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urljoin

from rawsse.client._errors import SSERedirectError
from rawsse.client._exchange import Exchange, PreparedRequest, ResponseHead, Target
from rawsse.jsonio import dumps

__all__ = ["DEFAULT_MAX_REDIRECTS", "Headers", "StreamRequest"]

Headers = Mapping[str, str] | Sequence[tuple[str, str]]

# WHATWG fetch: "If request's redirect count is 20, then return a network error."
DEFAULT_MAX_REDIRECTS = 20
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Rule 1: what a browser's EventSource sends (fetch adds the cache headers for "no-store").
_BROWSER_HEADERS = (
    ("Accept", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    ("Pragma", "no-cache"),
)
# Rule 4: fetch's "request-body-header names", and the length our serialiser would add.
_BODY_HEADERS = frozenset(
    {"content-type", "content-encoding", "content-language", "content-location", "content-length"}
)
# Rule 5.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "host"})


def _origin(target: Target) -> tuple[str, str, int]:
    return (target.scheme, target.host, target.port)


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """One request for an event stream: where, how, with which headers and body."""

    url: str
    target: Target
    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None

    @classmethod
    def build(
        cls,
        url: str,
        *,
        method: str | None = None,
        json: Any = None,
        body: bytes | None = None,
        headers: Headers | None = None,
    ) -> StreamRequest:
        """The request for ``url``: POST when a ``json`` or ``body`` is given, else GET."""
        if json is not None:
            if body is not None:
                raise ValueError("give json or body, not both")
            body = dumps(json)
        given = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        names = {name.lower() for name, _ in given}
        defaults = list(_BROWSER_HEADERS)
        if json is not None:
            defaults.append(("Content-Type", "application/json"))
        merged = [(name, value) for name, value in defaults if name.lower() not in names] + given
        chosen = (method or ("POST" if body is not None else "GET")).upper()
        return cls(url, Target.from_url(url), chosen, tuple(merged), body)

    def exchange(self, last_event_id: str = "") -> Exchange:
        """One sending of this request; ``Last-Event-ID`` is added when not empty."""
        headers = list(self.headers)
        if last_event_id:
            headers.append(("Last-Event-ID", last_event_id))
        return Exchange(PreparedRequest.build(self.target, self.method, headers, self.body))

    def redirect(self, head: ResponseHead, hops: int, max_redirects: int) -> StreamRequest | None:
        """The request that follows ``head``, the ``hops``-th redirect in a row, if it is one
        (see the module contract); raises ``SSERedirectError`` for one not to follow."""
        location = head.header("location")
        if head.status not in _REDIRECTS or location is None:
            return None
        if hops > max_redirects:
            raise SSERedirectError(head, location, f"more than {max_redirects} redirects")
        try:
            url = urljoin(self.url, location.strip())
            target = Target.from_url(url)
        except ValueError as exc:
            raise SSERedirectError(head, location, f"not an http(s) URL ({exc})") from exc
        headers = self.headers
        if _origin(target) != _origin(self.target):
            headers = tuple((n, v) for n, v in headers if n.lower() not in _CREDENTIAL_HEADERS)
        method, body = self.method, self.body
        if (head.status in (301, 302) and method == "POST") or (
            head.status == 303 and method not in ("GET", "HEAD")
        ):
            method, body = "GET", None
            headers = tuple((n, v) for n, v in headers if n.lower() not in _BODY_HEADERS)
        return replace(self, url=url, target=target, method=method, headers=headers, body=body)
