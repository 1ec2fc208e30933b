"""The application: a tiny router from (method, path) to handlers.

Contract: ``App`` is the ``Handler`` the connection driver calls. It finds the route for the
request's path, answers 404 when no route matches and 405 (with ``Allow``) when the path exists
under other methods, fills ``request.path_params``, and calls the handler. ``HEAD`` is served by
``GET`` handlers (the driver drops the body). Path templates use ``{name}`` for one segment, and
may mix literal text into a segment, as in ``/v1beta/models/{model}:streamGenerateContent``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from rawsse._errors import HTTPError
from rawsse.request import Request
from rawsse.response import Response, StreamingResponse

__all__ = ["App", "Route", "RouteHandler"]

RouteHandler = Callable[[Request], Awaitable[Response | StreamingResponse]]
H = TypeVar("H", bound=RouteHandler)

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


ErrorRenderer = Callable[[int, str], Response]
# Response headers a browser lets any allowed origin read (Fetch's CORS-safelisted names).
_CORS_SAFELISTED = frozenset(
    (
        b"cache-control",
        b"content-language",
        b"content-length",
        b"content-type",
        b"expires",
        b"last-modified",
        b"pragma",
    )
)


class Route:
    """One path template and the handlers registered on it, per method."""

    __slots__ = ("error_renderer", "handlers", "path", "regex")

    def __init__(self, path: str) -> None:
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        self.path = path
        self.handlers: dict[str, RouteHandler] = {}
        self.regex: re.Pattern[str] | None = None
        # Renders errors the server answers before a handler runs (413, 431) in this route's
        # own shape; None = plain text.
        self.error_renderer: ErrorRenderer | None = None
        if _PARAM.search(path):
            pattern = ""
            last = 0
            for match in _PARAM.finditer(path):
                pattern += re.escape(path[last : match.start()])
                pattern += f"(?P<{match.group(1)}>[^/]+?)"
                last = match.end()
            pattern += re.escape(path[last:])
            self.regex = re.compile(pattern + r"\Z")

    @property
    def allowed_methods(self) -> list[str]:
        """Methods this path answers, for an ``Allow`` header (HEAD wherever GET is)."""
        methods = set(self.handlers)
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    def handler_for(self, method: str) -> RouteHandler | None:
        """The handler for ``method`` (GET's for HEAD), or None."""
        handler = self.handlers.get(method)
        if handler is None and method == "HEAD":
            handler = self.handlers.get("GET")
        return handler


class App:
    """A set of routes, callable as the server's request handler."""

    def __init__(self, *, cors_origins: Iterable[str] = ()) -> None:
        self._static: dict[str, Route] = {}
        self._dynamic: list[Route] = []
        # CORS is off unless origins are listed; "*" allows any origin.
        self.cors_origins = frozenset(cors_origins)
        # The Server serving this App, once one is (for /metrics and the like).
        self.server: Any = None

    def bind_server(self, server: Any) -> None:
        """Called by ``Server`` when it starts serving this App."""
        self.server = server

    def add_route(
        self,
        path: str,
        handler: RouteHandler,
        methods: Iterable[str] = ("GET",),
        *,
        error_renderer: ErrorRenderer | None = None,
    ) -> None:
        """Register ``handler`` for ``path`` under each of ``methods``.

        ``error_renderer(status, detail)`` answers the errors the server decides before the
        handler runs (an oversized body, too many headers) in this route's own shape.
        """
        route = self._static.get(path) or next((r for r in self._dynamic if r.path == path), None)
        if route is None:
            route = Route(path)
            if route.regex is None:
                self._static[path] = route
            else:
                self._dynamic.append(route)
        if error_renderer is not None:
            route.error_renderer = error_renderer
        for method in methods:
            method = method.upper()
            if method in route.handlers:
                raise ValueError(f"{method} {path} is already routed")
            route.handlers[method] = handler

    def route(self, path: str, methods: Iterable[str] = ("GET",)) -> Callable[[H], H]:
        """Decorator form of ``add_route``."""

        def register(handler: H) -> H:
            self.add_route(path, handler, methods)
            return handler

        return register

    def get(self, path: str) -> Callable[[H], H]:
        """Register a GET (and HEAD) handler."""
        return self.route(path, ("GET",))

    def post(self, path: str) -> Callable[[H], H]:
        """Register a POST handler."""
        return self.route(path, ("POST",))

    def match(self, path: str, method: str | None = None) -> tuple[Route, dict[str, str]] | None:
        """Find the route for ``path`` (preferring one that answers ``method``) and its
        path parameters. Templates may overlap (``/v1/models/{model}`` and
        ``/v1/models/{model}:generateContent``): the first that answers the method wins."""
        route = self._static.get(path)
        if route is not None and (method is None or route.handler_for(method) is not None):
            return route, {}
        fallback: tuple[Route, dict[str, str]] | None = (route, {}) if route is not None else None
        for candidate in self._dynamic:
            assert candidate.regex is not None
            found = candidate.regex.match(path)
            if found is None:
                continue
            if method is None or candidate.handler_for(method) is not None:
                return candidate, found.groupdict()
            if fallback is None:
                fallback = (candidate, found.groupdict())
        return fallback

    def allowed_methods(self, path: str) -> list[str]:
        """Every method some route for ``path`` answers."""
        methods: set[str] = set()
        route = self._static.get(path)
        if route is not None:
            methods.update(route.allowed_methods)
        for candidate in self._dynamic:
            assert candidate.regex is not None
            if candidate.regex.match(path):
                methods.update(candidate.allowed_methods)
        return sorted(methods)

    def render_error(
        self, path: str, status: int, detail: str, method: str | None = None
    ) -> Response | None:
        """The route's own rendering of an error the server decided (None: plain text)."""
        found = self.match(path, method)
        if found is None or found[0].error_renderer is None:
            return None
        return found[0].error_renderer(status, detail)

    @property
    def routes(self) -> list[Route]:
        """Every route, static ones first."""
        return [*self._static.values(), *self._dynamic]

    async def __call__(self, request: Request) -> Response | StreamingResponse:
        """Dispatch ``request`` to its handler (the connection driver's entry point)."""
        if not self.cors_origins:
            return await self._dispatch(request)
        origin = request.headers.get("origin")
        if origin is None or not ("*" in self.cors_origins or origin in self.cors_origins):
            return await self._dispatch(request)
        allowed = "*" if "*" in self.cors_origins else origin
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            if self.match(request.path) is None:
                raise HTTPError(404, "not found")
            return Response(
                b"",
                204,
                [
                    ("access-control-allow-origin", allowed),
                    ("access-control-allow-methods", ", ".join(self.allowed_methods(request.path))),
                    (
                        "access-control-allow-headers",
                        request.headers.get("access-control-request-headers", ""),
                    ),
                    ("access-control-max-age", "600"),
                    ("vary", "Origin"),
                ],
            )
        try:
            response = await self._dispatch(request)
        except HTTPError as exc:
            response = Response(exc.detail or "error", exc.status, exc.headers)
        # A new list: responses may share a header list (every plain EventStream does).
        headers = [
            *response.headers,
            (b"access-control-allow-origin", allowed.encode("latin-1")),
            (b"vary", b"Origin"),
        ]
        # The allowed origin may read every header of the response (x-rawsse-stream-id, ...),
        # not only the safelisted ones a browser shows without being told.
        exposed = sorted({name.lower() for name, _ in response.headers} - _CORS_SAFELISTED)
        if exposed:
            headers.append((b"access-control-expose-headers", b", ".join(exposed)))
        response.headers = headers
        return response

    async def _dispatch(self, request: Request) -> Response | StreamingResponse:
        found = self.match(request.path, request.method)
        if found is None:
            if request.path == "*" and request.method == "OPTIONS":
                # "OPTIONS *" asks about the server as a whole (RFC 9110 9.3.7): every method
                # some route answers.
                methods = sorted({m for route in self.routes for m in route.allowed_methods})
                return Response(b"", 204, [("allow", ", ".join(methods))])
            raise HTTPError(404, "not found")
        route, params = found
        handler = route.handler_for(request.method)
        if handler is None:
            allow = ", ".join(self.allowed_methods(request.path))
            if request.method == "OPTIONS":
                return Response(b"", 204, [("allow", allow)])
            raise HTTPError(405, f"method {request.method} not allowed", headers=[("allow", allow)])
        request.path_params = params
        return await handler(request)
