"""The rules a request head must keep before its body is read, and the path a route sees.

Contract: ``check_request_head(...)`` takes a head h11 has parsed (its syntax, its framing
headers' syntax and the presence of exactly one ``Host`` on HTTP/1.1 are h11's) and either
returns how its body is framed or raises ``Refused(status, detail)``. ``split_target`` turns a
request-target into the decoded path and the raw query a route sees. Pure: no I/O.

Rules, in the order they are checked (each quoted where it is implemented):
1. The request line shares the header section's byte limit; a line longer than the whole
   limit is 414 (RFC 9112 3: a server "MUST respond with a 414 (URI Too Long)" to a target
   longer than it wishes to parse), a section over it 431 (RFC 6585 5).
2. Header fields: at most ``max_headers`` (431).
3. The target is origin-form (``/p?q``), absolute-form (``http://host/p?q``: RFC 9112 3.2.2
   "a server MUST accept the absolute-form"), or ``*`` for OPTIONS; anything else is 400.
4. ``Host`` (and an absolute-form target's authority) must be a valid ``uri-host [ ":" port ]``:
   RFC 9112 3.2 "A server MUST respond with a 400 ... to any request message that contains ...
   a Host header field line with an invalid field value". No userinfo (RFC 9110 4.2.4).
5. Framing: ``Content-Length`` with ``Transfer-Encoding`` is refused (400) rather than letting
   Transfer-Encoding win (RFC 9112 6.1 allows either; refusing rules out smuggling); a
   ``Content-Length`` over the body limit is 413 before any of the body is read.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from rawsse._http.limits import ServerLimits

__all__ = ["BodyFraming", "Refused", "check_request_head", "split_target"]


class Refused(Exception):
    """The request is refused with ``status``; ``detail`` is safe to show the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail


class BodyFraming:
    """How a request's body is framed: ``length`` bytes, or chunked (``length`` None)."""

    __slots__ = ("expects_continue", "length")

    def __init__(self, length: int | None, expects_continue: bool) -> None:
        self.length = length
        self.expects_continue = expects_continue


# A bodiless request that expects nothing (most requests): shared, never changed.
NO_BODY = BodyFraming(0, False)

# RFC 3986: host = IP-literal / IPv4address / reg-name; IPv4 addresses are reg-names too.
_UNRESERVED_OR_SUB = rb"A-Za-z0-9\-._~!$&'()*+,;="
_HOST = (
    rb"(?:\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[" + _UNRESERVED_OR_SUB + rb":]+)\]"
    rb"|(?:[" + _UNRESERVED_OR_SUB + rb"]|%[0-9A-Fa-f]{2})*)"
    rb"(?::[0-9]*)?"
)
_HOST_VALUE = re.compile(_HOST + rb"\Z")
# absolute-form: scheme "://" authority, then path-abempty and an optional query.
_ABSOLUTE = re.compile(rb"(?i:https?)://(" + _HOST + rb")(?=[/?]|\Z)")


def check_request_head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    limits: ServerLimits,
) -> BodyFraming:
    """How the body is framed, or ``Refused`` (see the module's rules)."""
    # Rule 1: "METHOD SP target SP HTTP/1.1 CRLF".
    line_bytes = len(method) + len(target) + 12
    if line_bytes > limits.max_header_bytes:
        raise Refused(414, "request target too long")
    if len(headers) > limits.max_headers:  # rule 2
        raise Refused(431, f"too many header fields (limit {limits.max_headers})")
    # h11 only bounds a head that arrives in pieces; one that arrives whole in a single read
    # is measured here, so the limit does not depend on packet boundaries.
    section_bytes = line_bytes + 2
    content_length: bytes | None = None
    chunked = expects_continue = False
    for name, value in headers:
        section_bytes += len(name) + len(value) + 4
        if name == b"host":
            if not _HOST_VALUE.match(value):  # rule 4
                raise Refused(400, "invalid Host header")
        elif name == b"content-length":
            content_length = value
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"expect":
            expects_continue = value.lower() == b"100-continue"
    if section_bytes > limits.max_header_bytes:
        raise Refused(431, "request header section too large")
    if target[:1] != b"/":
        _check_other_form(method, target)  # rules 3 and 4
    if chunked:  # rule 5
        if content_length is not None:
            raise Refused(400, "both Content-Length and Transfer-Encoding: ambiguous framing")
        return BodyFraming(None, expects_continue)
    length = int(content_length) if content_length is not None else 0
    if length > limits.max_body_bytes:
        raise Refused(413, f"request body too large (limit {limits.max_body_bytes} bytes)")
    return BodyFraming(length, expects_continue) if length or expects_continue else NO_BODY


def _check_other_form(method: bytes, target: bytes) -> None:
    if target == b"*" and method == b"OPTIONS":
        return
    if _ABSOLUTE.match(target) is None:
        raise Refused(400, "malformed request target")


def split_target(target: bytes) -> tuple[str, str]:
    """The decoded path and the raw query of a request-target (absolute-form included)."""
    raw_path, _, query = target.partition(b"?")
    if raw_path[:1] != b"/":
        absolute = _ABSOLUTE.match(raw_path)
        if absolute is not None:
            raw_path = raw_path[absolute.end() :] or b"/"
    return unquote(raw_path.decode("latin-1")), query.decode("latin-1")
