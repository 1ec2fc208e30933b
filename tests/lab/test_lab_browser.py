"""The wire lab in a real browser: Debian's headless Chromium, on asyncio and trio servers.

The server is ``rawsse serve`` (the demo app mounts the lab at ``/``) with an API key, a
``retry:`` hint and CORS for the relay's origin; the browser loads the page through ``Relay``,
which keeps every byte the server sent. Why the DevTools protocol and not Playwright: see
``tests/lab/browser.py``. Without Chromium these tests skip, saying so, except where
``RAWSSE_REQUIRE_CHROMIUM`` is set (``.ci/run`` sets it wherever it can install Chromium).

What is checked: the page loads with no console error and fetches nothing from elsewhere; the
``echo`` model's exact answer is rendered token by token (the DOM grows while the stream is
open), sent from the keyboard; every dialect renders its answer; the wire pane's byte total is
what the server sent for that response; a cut on the resume lab makes the browser's
``EventSource`` reconnect with ``Last-Event-ID``, on the resume token rather than the key, and
the page shows a complete, gapless sequence (and flags duplicates when a fresh ``EventSource``
replays from the start); the server view follows ``/metrics``; a page of an allowed origin reads
rawsse's headers cross-origin.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from rawsse.parser import EventParser
from tests.chat_support import echo_tokens
from tests.lab.browser import (
    Chromium,
    LabServer,
    Page,
    Relay,
    body_of_stream,
    find_chromium,
    lab_server,
)

KEY = "sk-lab-browser"
RETRY_MS = 300
HEARTBEAT_S = 0.25
PROMPT = "Wire  lab:\tévénement ✓ 👋 — one token per word, rendered one by one."
REASONING = "Thinking about the answer before giving it."


@dataclass
class Lab:
    server: LabServer
    relay: Relay


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    browser = Chromium(find_chromium())
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    relay = Relay()
    try:
        with lab_server(
            "--backend",
            request.param,
            "--api-key",
            KEY,
            "--retry-ms",
            str(RETRY_MS),
            "--cors-origin",
            relay.url,
            "--token-delay",
            "0.02",
            "--heartbeat",
            str(HEARTBEAT_S),
        ) as server:
            relay.start(server.port)
            yield Lab(server, relay)
    finally:
        relay.stop()


@pytest.fixture
def page(chromium: Chromium, lab: Lab) -> Iterator[Page]:
    tab = chromium.new_page()
    try:
        tab.navigate(lab.relay.url + "/")
        yield tab
    finally:
        tab.close()


def fill(page: Page, **values: str) -> None:
    """Set form fields by id (underscores for dashes), as typing then leaving them would."""
    fields = {name.replace("_", "-"): value for name, value in values.items()}
    page.evaluate(
        f"""for (const [id, v] of Object.entries({json.dumps(fields)})) {{
            const e = document.getElementById(id);
            e.value = v; e.dispatchEvent(new Event("change"));
        }}"""
    )


def click(page: Page, element_id: str) -> None:
    page.evaluate(f"document.getElementById({json.dumps(element_id)}).click()")


def chat_state(page: Page) -> tuple[str, str, str]:
    """The chat view's state, status line and answer text."""
    state, status, text = page.evaluate(
        "[document.getElementById('chat-status').dataset.state,"
        " document.getElementById('chat-status').textContent,"
        " document.getElementById('answer').textContent]"
    )
    return state, status, text


def finished_chat(page: Page) -> tuple[str, str, str]:
    return page.wait_until(
        lambda: (s := chat_state(page))[0] in ("done", "error") and s, "the chat to finish"
    )


def test_the_page_loads_with_no_console_errors(page: Page, lab: Lab) -> None:
    page.wait_for("document.getElementById('metrics-status').dataset.updates >= 1")
    assert page.evaluate("document.title") == "rawsse wire lab"
    assert page.console_errors() == []
    # Everything came from the page's own origin: no CDN, no web font, no build artefact.
    urls = [e["request"]["url"] for e in page.events("Network.requestWillBeSent")]
    assert urls and all(url.startswith(lab.relay.url + "/") for url in urls), urls
    document = next(
        e["response"] for e in page.events("Network.responseReceived") if e["type"] == "Document"
    )
    headers = {name.lower(): value for name, value in document["headers"].items()}
    assert "connect-src 'self'" in headers["content-security-policy"]
    # Every control is reachable from the keyboard: nothing focusable is taken out of the order.
    assert page.evaluate("document.querySelectorAll('[tabindex=\"-1\"]').length") == 0


def test_the_echo_answer_streams_in_token_by_token(page: Page, lab: Lab) -> None:
    # The first token waits long enough for heartbeats (lone ":" lines in OpenAI's dialect).
    ttft = str(HEARTBEAT_S * 3)
    fill(
        page, key=KEY, dialect="openai", model="echo", ttft=ttft, token_delay="0.05", prompt=PROMPT
    )
    page.evaluate("document.getElementById('prompt').focus()")
    page.press_ctrl_enter()  # the keyboard shortcut sends, as a person would
    samples: list[tuple[str, str, str]] = []

    def finished() -> bool:
        samples.append(chat_state(page))
        return samples[-1][0] in ("done", "error")

    page.wait_until(finished, "the chat to finish", every_s=0.005)
    state, status, text = samples[-1]
    assert state == "done", status
    assert text == PROMPT
    assert "finish: stop" in status
    tokens = echo_tokens(PROMPT)
    assert (
        page.evaluate("[...document.querySelectorAll('#answer .tok')].map(e => e.textContent)")
        == tokens
    )
    # While the stream was open the answer grew through whole-token prefixes, several of them.
    prefixes = {"".join(tokens[:i]) for i in range(len(tokens) + 1)}
    growing = {t for s, _, t in samples if s == "streaming" and 0 < len(t) < len(PROMPT)}
    assert len(growing) >= 3, samples
    assert growing <= prefixes

    # The wire pane counted exactly the bytes the server sent for this response.
    stream_id = page.evaluate("document.getElementById('answer').dataset.streamId")
    body = body_of_stream(lab.relay.sent_by_server(), stream_id)
    shown = page.evaluate("document.getElementById('wire-bytes').dataset.bytes")
    assert int(shown) == len(body)
    events = EventParser().feed(body)
    counts = page.evaluate(
        "['wire-events', 'wire-retries', 'wire-reads', 'wire-heartbeats'].map("
        "id => Number(document.getElementById(id).textContent))"
    )
    lines = body.split(b"\n")
    assert counts[1] == sum(line.startswith(b"retry:") for line in lines)
    heartbeats = sum(line.startswith(b":") for line in lines)
    assert counts[3] == heartbeats >= 1
    assert counts[0] == len(events) == len(tokens) + 4  # role, tokens, finish, usage, [DONE]
    assert counts[2] == page.evaluate("document.querySelectorAll('#wire-log > li').length") > 1
    assert page.console_errors() == []


def test_every_dialect_renders_its_answer(page: Page) -> None:
    fill(page, key=KEY, model="echo", token_delay="0", prompt=PROMPT)
    for dialect in ("anthropic", "gemini", "chatgpt-web", "envelope", "openai"):
        fill(page, dialect=dialect, answer_kind="reasoning")
        click(page, "send")
        state, status, text = finished_chat(page)
        assert (state, text) == ("done", PROMPT), (dialect, status)
        reasoning = page.evaluate("document.getElementById('reasoning').textContent")
        # ChatGPT web drops reasoning (docs/dialects.md); the others show it apart.
        assert reasoning == ("" if dialect == "chatgpt-web" else REASONING), dialect
    fill(page, dialect="anthropic", answer_kind="tool_call")
    click(page, "send")
    state, status, _ = finished_chat(page)
    assert state == "done" and "tool_use" in status, status
    tool = page.evaluate("document.getElementById('tool').textContent")
    assert json.loads(tool.removeprefix("lookup(").removesuffix(")")) == {"query": PROMPT}
    # An injected failure mid-stream shows as an error, not as a short answer.
    fill(page, dialect="openai", answer_kind="text", fail_after="2")
    click(page, "send")
    state, status, text = finished_chat(page)
    assert state == "error" and "Error from the model" in status, status
    assert text == "".join(echo_tokens(PROMPT)[:2])
    assert page.console_errors() == []


def resume_ids(page: Page) -> dict[str, Any]:
    return page.evaluate(
        """({ok: [...document.querySelectorAll('#resume-ids li.ok')].map(e => Number(e.textContent)),
            bad: document.querySelectorAll('#resume-ids li.dup, #resume-ids li.missing').length,
            result: {...document.getElementById('resume-result').dataset},
            text: document.getElementById('resume-result').textContent})"""
    )


def event_source_requests(page: Page) -> list[tuple[str, dict[str, str]]]:
    """The URL and the headers as sent (names lower case) of each request to the resume route."""
    sent = {e["requestId"]: e["headers"] for e in page.events("Network.requestWillBeSentExtraInfo")}
    return [
        (e["request"]["url"], {k.lower(): v for k, v in sent.get(e["requestId"], {}).items()})
        for e in page.events("Network.requestWillBeSent")
        if e["request"]["url"].split("?")[0].endswith("/events")
    ]


def test_a_cut_resumes_with_last_event_id_and_no_gap(page: Page) -> None:
    fill(page, key=KEY, resume_model="lorem", resume_tokens="40", resume_delay="0.04")
    click(page, "resume-start")
    page.wait_for("document.querySelectorAll('#resume-ids li.ok').length >= 5", "five ids")
    click(page, "resume-cut")
    page.wait_for(
        "document.getElementById('resume-result').dataset.state === 'complete'", "the end", 20
    )
    seen = resume_ids(page)
    # role chunk, 40 tokens, the finish chunk, [DONE]: each id once, over two connections.
    assert seen["ok"] == list(range(1, 44)), seen
    assert seen["bad"] == 0
    assert seen["result"]["gapless"] == "true", seen["text"]
    assert int(seen["result"]["connections"]) >= 2, seen
    # The browser's own reconnect sent Last-Event-ID; the URL holds the token, never the key.
    page.wait_until(lambda: len(event_source_requests(page)) >= 2, "the requests' headers")
    (first_url, first), (second_url, second), *_ = event_source_requests(page)
    assert first and second, "Chromium reported no headers as sent"
    assert "last-event-id" not in first
    assert 5 <= int(second["last-event-id"]) < 43
    for url, headers in ((first_url, first), (second_url, second)):
        assert "resume_token=" in url and KEY not in url
        assert "authorization" not in headers
    assert page.console_errors() == []


def test_a_fresh_event_source_replays_and_the_page_flags_duplicates(page: Page) -> None:
    fill(page, key=KEY, resume_model="lorem", resume_tokens="12", resume_delay="0.04")
    click(page, "resume-start")
    page.wait_for("document.querySelectorAll('#resume-ids li.ok').length >= 4", "four ids")
    click(page, "resume-reopen")
    page.wait_for(
        "document.getElementById('resume-result').dataset.state === 'complete'", "the end", 20
    )
    seen = resume_ids(page)
    assert seen["result"]["gapless"] == "false"
    assert seen["bad"] >= 4 and "DUPLICATE" in seen["text"], seen
    assert page.console_errors() == []


def test_the_server_view_follows_the_metrics(page: Page, lab: Lab) -> None:
    page.wait_for("document.getElementById('metrics-status').dataset.updates >= 1")
    with httpx.Client(base_url=lab.server.url, timeout=10) as client:
        answer = client.post(
            "/v1/chat/completions",
            json={
                "model": "lorem",
                "max_tokens": 3,
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            },
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert answer.status_code == 200
        metrics = client.get("/metrics").text
    streams = next(
        str(int(float(line.split()[1])))
        for line in metrics.splitlines()
        if line.startswith("rawsse_streams_total ")
    )
    page.wait_for(f"document.getElementById('m-streams').textContent === {json.dumps(streams)}")
    page.wait_for("document.getElementById('metrics-status').dataset.updates >= 3")
    points = page.evaluate(
        "document.querySelector('#s-streams polyline').getAttribute('points').split(' ').length"
    )
    assert points >= 3
    assert page.console_errors() == []


def test_an_allowed_origin_reads_rawsse_headers_cross_origin(chromium: Chromium, lab: Lab) -> None:
    tab = chromium.new_page()
    try:
        tab.navigate(lab.relay.url + "/healthz")  # the relay's origin, allowed by --cors-origin
        seen = tab.evaluate(
            f"""(async () => {{
                const base = {json.dumps(lab.server.url)};
                const first = await fetch(base + "/v1/chat/completions", {{
                    method: "POST",
                    headers: {{"Authorization": "Bearer {KEY}", "Content-Type": "application/json"}},
                    body: JSON.stringify({{model: "echo", stream: true,
                                          messages: [{{role: "user", content: "one two three"}}]}}),
                }});
                await first.text();
                const id = first.headers.get("x-rawsse-stream-id");
                const token = first.headers.get("x-rawsse-resume-token");
                const again = await fetch(
                    `${{base}}/v1/chat/completions/${{id}}/events?resume_token=${{token}}`,
                    {{headers: {{"Last-Event-ID": "2"}}}});
                await again.text();
                return {{id, token, status: again.status,
                         from: again.headers.get("x-rawsse-replay-from"),
                         gap: again.headers.get("x-rawsse-replay-gap")}};
            }})()""",
            await_promise=True,
        )
    finally:
        tab.close()
    assert seen["id"] and seen["token"], seen
    assert (seen["status"], seen["from"], seen["gap"]) == (200, "3", "0")


def test_an_event_source_that_has_the_whole_stream_stops(chromium: Chromium, lab: Lab) -> None:
    """The browser's own EventSource on a finished stream's resume route: it reads every frame,
    then the server answers its reconnect with 204, and it stops (readyState CLOSED) instead of
    reconnecting after every retry delay for as long as the page is open."""
    tab = chromium.new_page()
    try:
        tab.navigate(lab.server.url + "/healthz")
        tab.evaluate(
            f"""(async () => {{
                const first = await fetch("/v1/chat/completions", {{
                    method: "POST",
                    headers: {{"Authorization": "Bearer {KEY}", "Content-Type": "application/json"}},
                    body: JSON.stringify({{model: "echo", stream: true,
                                          messages: [{{role: "user", content: "one two three"}}]}}),
                }});
                await first.text();
                const id = first.headers.get("x-rawsse-stream-id");
                const token = first.headers.get("x-rawsse-resume-token");
                window.seen = {{ids: [], opens: 0}};
                window.source = new EventSource(
                    `/v1/chat/completions/${{id}}/events?resume_token=${{token}}`);
                window.source.onopen = () => {{ window.seen.opens += 1; }};
                window.source.onmessage = (e) => {{ window.seen.ids.push(e.lastEventId); }};
            }})()""",
            await_promise=True,
        )
        # CLOSED (2) comes only from the 204: a stream that ends normally leaves it CONNECTING.
        tab.wait_for("window.source.readyState === 2", "the EventSource to stop", timeout_s=15)
        seen = tab.evaluate("window.seen")
    finally:
        tab.close()
    assert seen["ids"] == ["1", "2", "3", "4", "5", "6"], seen
    assert seen["opens"] == 1, seen
