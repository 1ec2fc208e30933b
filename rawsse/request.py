"""The request a handler receives: method, target, headers and the whole body.

Contract: a ``Request`` is built by the connection driver once the request's body has been read
(up to the body limit). It is read-only; parsing beyond splitting the target (query strings,
JSON) happens lazily, on first use, so a handler pays only for what it reads.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

from rawsse._errors import HTTPError
from rawsse._http.request_head import split_target
from rawsse.jsonio import loads

__all__ = ["Headers", "Request"]


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only view of a header list (names arrive lower-cased from h11).

    Indexing returns the first value for a name; ``get_all`` returns every value.
    """

    __slots__ = ("_map", "raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        self._map: dict[str, str] | None = None

    def _mapping(self) -> dict[str, str]:
        if self._map is None:
            mapping: dict[str, str] = {}
            for name, value in self.raw:
                mapping.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
            self._map = mapping
        return self._map

    def __getitem__(self, name: str) -> str:
        return self._mapping()[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:
        """Return the first value of header ``name`` (any case), or ``default``."""
        return self._mapping().get(name.lower(), default)

    def get_all(self, name: str) -> list[str]:
        """Return every value of header ``name``, in the order they were sent."""
        key = name.lower().encode("latin-1")
        return [value.decode("latin-1") for n, value in self.raw if n.lower() == key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._mapping()

    def __repr__(self) -> str:
        return f"Headers({self.raw!r})"


_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}\Z")
_request_counter = itertools.count(1)


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The X-Request-ID sent (when a safe token), else a new process-unique request id."""
    for name, value in headers:
        if name == b"x-request-id" and _SAFE_REQUEST_ID.match(value):
            return value.decode("ascii")
    # The pid at call time: workers forked after import must not share a prefix.
    return f"{os.getpid():x}-{next(_request_counter):x}"


class Request:
    """One HTTP request, with its body already read."""

    __slots__ = (
        "_query",
        "_request_id",
        "body",
        "client",
        "headers",
        "http_version",
        "method",
        "path",
        "path_params",
        "query_string",
        "state",
        "target",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        client: tuple[str, int] | None = None,
        http_version: str = "1.1",
    ) -> None:
        self.method = method
        self.target = target
        # The path a route sees (decoded; an absolute-form target's scheme and authority
        # dropped) and the query as sent.
        self.path, self.query_string = split_target(target)
        self.headers = Headers(headers)
        self.body = body
        self.client = client
        self.http_version = http_version
        self.path_params: dict[str, str] = {}
        self._request_id: str | None = None
        # Free for the application (auth results, request ids, ...).
        self.state: dict[str, Any] = {}
        self._query: dict[str, str] | None = None

    @property
    def request_id(self) -> str:
        """Names this request in the logs: the client's X-Request-ID when it is a safe token,
        else a process-unique id (made on first use: a request nobody logs costs nothing)."""
        if self._request_id is None:
            self._request_id = _request_id(self.headers.raw)
        return self._request_id

    @request_id.setter
    def request_id(self, value: str) -> None:
        self._request_id = value

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (the first value of each name), decoded."""
        if self._query is None:
            self._query = {}
            for name, value in parse_qsl(self.query_string, keep_blank_values=True):
                self._query.setdefault(name, value)
        return self._query

    @property
    def last_event_id(self) -> str | None:
        """The ``Last-Event-ID`` header a reconnecting SSE client sends, if any."""
        value: str | None = self.headers.get("last-event-id")
        return value

    def json(self) -> Any:
        """Parse the body as JSON; a body that is not JSON is answered with 400."""
        try:
            return loads(self.body)
        except ValueError as exc:
            raise HTTPError(400, f"request body is not valid JSON: {exc}") from exc

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target!r}>"
