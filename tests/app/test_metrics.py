"""/metrics in the Prometheus text format, with and without prometheus_client."""

from __future__ import annotations

import pytest

from rawsse.app import App
from rawsse.metrics import METRICS, metrics_handler, render_prometheus
from rawsse.request import Request
from rawsse.stream import EventStream
from tests.support import RawClient, get, request, running_server

pytestmark = pytest.mark.anyio

CONTRACT = [
    "rawsse_streams_active",
    "rawsse_streams_total",
    "rawsse_events_total",
    "rawsse_bytes_sent_total",
    "rawsse_heartbeats_total",
    "rawsse_client_disconnects_total",
    "rawsse_slow_client_evictions_total",
    "rawsse_replay_errors_total",
]


def samples(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def make_app(use_client: bool) -> App:
    app = App()

    @app.get("/events")
    async def events(req: Request) -> EventStream:
        return EventStream(iter_events(), heartbeat_s=0)

    async def iter_events():  # type: ignore[no-untyped-def]
        for i in range(3):
            yield {"i": i}

    app.add_route(
        "/metrics",
        metrics_handler(
            lambda: app.server.stats if app.server else None, use_prometheus_client=use_client
        ),
    )
    return app


@pytest.mark.parametrize("use_client", [False, True], ids=["builtin", "prometheus_client"])
async def test_metrics_page_has_the_contract_names(use_client: bool) -> None:
    if use_client:
        pytest.importorskip("prometheus_client")
    async with running_server(make_app(use_client)) as server:
        before = METRICS.events_total
        async with RawClient.connect(server.port) as client:
            await client.send(get("/events"))
            await client.read_until_close()
        [page] = await request(server.port, get("/metrics"))
        assert page.status == 200
        assert (page.header("content-type") or "").startswith("text/plain")
        values = samples(page.body.decode())
        for name in CONTRACT:
            assert name in values, name
        assert values["rawsse_events_total"] >= before + 3
        assert values['rawsse_http_requests_total{status="200"}'] >= 1
        assert values["rawsse_streams_active"] == 0
        assert values["rawsse_bytes_sent_total"] > 0


@pytest.mark.parametrize("use_client", [False, True], ids=["builtin", "prometheus_client"])
async def test_a_fresh_servers_first_scrape_names_every_contract_metric(use_client: bool) -> None:
    """The first request a server answers may be the scrape itself, not counted yet: the
    responses-by-status series exists anyway (200 at 0), as the contract's other names do."""
    if use_client:
        pytest.importorskip("prometheus_client")
    async with running_server(make_app(use_client)) as server:
        [page] = await request(server.port, get("/metrics"))
    values = samples(page.body.decode())
    for name in CONTRACT:
        assert name in values, name
    assert values['rawsse_http_requests_total{status="200"}'] == 0


def test_render_prometheus_format() -> None:
    text = render_prometheus()
    assert "# TYPE rawsse_streams_active gauge" in text
    assert "# TYPE rawsse_events_total counter" in text
    assert text.endswith("\n")


async def test_metrics_counts_404_by_status() -> None:
    async with running_server(make_app(False)) as server:
        await request(server.port, get("/missing"))
        [page] = await request(server.port, get("/metrics"))
        assert samples(page.body.decode())['rawsse_http_requests_total{status="404"}'] == 1
