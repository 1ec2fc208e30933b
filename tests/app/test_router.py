"""``App``, the router, on its own: matching, path parameters, 404/405, HEAD, OPTIONS, CORS,
errors rendered in a route's own shape. Requests are built directly; no server."""

from __future__ import annotations

import pytest

from rawsse._errors import HTTPError
from rawsse.app import App, Route
from rawsse.request import Request
from rawsse.response import JSONResponse, Response

pytestmark = pytest.mark.anyio


def request(method: str, target: str, headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request(method, target.encode(), [(b"host", b"t"), *raw])


def app_with_routes() -> App:
    app = App()

    @app.get("/items")
    async def items(req: Request) -> Response:
        return Response("all items")

    @app.post("/items")
    async def create(req: Request) -> Response:
        return Response("created", 201)

    @app.get("/items/{item_id}")
    async def item(req: Request) -> Response:
        return JSONResponse(req.path_params)

    @app.post("/v1beta/models/{model}:streamGenerateContent")
    async def stream_generate(req: Request) -> Response:
        return JSONResponse({"stream": req.path_params["model"]})

    @app.post("/v1beta/models/{model}:generateContent")
    async def generate(req: Request) -> Response:
        return JSONResponse({"once": req.path_params["model"]})

    @app.get("/v1beta/models/{model}")
    async def model(req: Request) -> Response:
        return JSONResponse({"model": req.path_params["model"]})

    return app


async def answer(app: App, req: Request) -> Response:
    try:
        response = await app(req)
    except HTTPError as exc:
        return Response(exc.detail, exc.status, exc.headers)
    assert isinstance(response, Response)
    return response


async def test_static_and_templated_routes() -> None:
    app = app_with_routes()
    assert (await answer(app, request("GET", "/items"))).body == b"all items"
    assert (await answer(app, request("POST", "/items"))).status == 201
    assert (await answer(app, request("GET", "/items/42"))).body == b'{"item_id":"42"}'
    # Decoded before matching; a parameter is one segment.
    assert (await answer(app, request("GET", "/items/a%20b"))).body == b'{"item_id":"a b"}'
    assert (await answer(app, request("GET", "/items/a/b"))).status == 404


async def test_literal_text_in_a_segment_and_overlapping_templates() -> None:
    app = app_with_routes()
    found = await answer(app, request("POST", "/v1beta/models/gem-1:streamGenerateContent"))
    assert found.body == b'{"stream":"gem-1"}'
    found = await answer(app, request("POST", "/v1beta/models/gem-1:generateContent"))
    assert found.body == b'{"once":"gem-1"}'
    # "/v1beta/models/{model}" also matches "x:generateContent" as a model name: for GET the
    # template that answers the method wins.
    found = await answer(app, request("GET", "/v1beta/models/gem-1:generateContent"))
    assert found.body == b'{"model":"gem-1:generateContent"}'


async def test_unknown_path_is_404_and_wrong_method_405_with_allow() -> None:
    app = app_with_routes()
    missing = await answer(app, request("GET", "/nope"))
    assert (missing.status, missing.body) == (404, b"not found")
    wrong = await answer(app, request("DELETE", "/items"))
    assert wrong.status == 405
    assert dict(wrong.headers)[b"allow"] == b"GET, HEAD, POST"
    # Allow lists every method of every template matching the path.
    assert app.allowed_methods("/v1beta/models/m:generateContent") == ["GET", "HEAD", "POST"]


async def test_head_is_served_by_get_and_options_lists_the_methods() -> None:
    app = app_with_routes()
    assert (await answer(app, request("HEAD", "/items/7"))).status == 200
    options = await answer(app, request("OPTIONS", "/items"))
    assert options.status == 204
    assert dict(options.headers)[b"allow"] == b"GET, HEAD, POST"


async def test_options_asterisk_lists_every_method_of_the_server() -> None:
    app = app_with_routes()
    options = await answer(app, request("OPTIONS", "*"))
    assert options.status == 204
    assert dict(options.headers)[b"allow"] == b"GET, HEAD, POST"
    assert (await answer(App(), request("OPTIONS", "*"))).headers == [(b"allow", b"")]


async def test_absolute_form_targets_route_by_their_path() -> None:
    app = app_with_routes()
    found = await answer(app, request("GET", "http://example.com:8080/items/9?x=1"))
    assert found.body == b'{"item_id":"9"}'


def test_bad_registrations_are_refused() -> None:
    app = app_with_routes()

    async def handler(req: Request) -> Response:
        return Response("")

    with pytest.raises(ValueError, match="already routed"):
        app.add_route("/items", handler, ("get",))
    with pytest.raises(ValueError, match="must start with '/'"):
        Route("items")
    app.add_route("/items", handler, ("PUT",))  # another method on the same route is fine
    assert [r.path for r in app.routes][:1] == ["/items"]
    assert app.match("/items", "PUT") is not None


async def test_cors_preflight_and_headers_for_allowed_origins_only() -> None:
    app = App(cors_origins=["https://ok.example"])

    @app.get("/data")
    async def data(req: Request) -> Response:
        return Response("data")

    preflight = await answer(
        app,
        request(
            "OPTIONS",
            "/data",
            {
                "Origin": "https://ok.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        ),
    )
    headers = dict(preflight.headers)
    assert preflight.status == 204
    assert headers[b"access-control-allow-origin"] == b"https://ok.example"
    assert headers[b"access-control-allow-methods"] == b"GET, HEAD"
    assert headers[b"access-control-allow-headers"] == b"authorization"
    assert headers[b"vary"] == b"Origin"

    allowed = await answer(app, request("GET", "/data", {"Origin": "https://ok.example"}))
    assert dict(allowed.headers)[b"access-control-allow-origin"] == b"https://ok.example"
    other = await answer(app, request("GET", "/data", {"Origin": "https://evil.example"}))
    assert not any(name.startswith(b"access-control-") for name, _ in other.headers)
    # An error answered to an allowed origin carries the headers too (the browser may read it).
    missing = await answer(app, request("GET", "/nope", {"Origin": "https://ok.example"}))
    assert missing.status == 404
    assert b"access-control-allow-origin" in dict(missing.headers)


async def test_errors_decided_before_the_handler_use_the_routes_renderer() -> None:
    app = App()

    async def upload(req: Request) -> Response:
        return Response("stored")

    app.add_route(
        "/upload/{name}",
        upload,
        ("POST",),
        error_renderer=lambda status, detail: JSONResponse({"code": status, "why": detail}, status),
    )
    rendered = app.render_error("/upload/x", 413, "too large", "POST")
    assert rendered is not None
    assert (rendered.status, rendered.body) == (413, b'{"code":413,"why":"too large"}')
    assert app.render_error("/elsewhere", 413, "too large", "POST") is None
