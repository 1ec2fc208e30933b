"""A real headless Chromium for the wire lab's tests, driven through the DevTools protocol.

Why the DevTools protocol over a websocket, and not Playwright: the tests must run Debian's own
``chromium`` and nothing may download a browser build. Playwright's Python package brings a
Node.js driver (~100 MB) and is made for the browser builds it pins; pointed at another
executable it works, but through a layer we do not need. The protocol itself is a few JSON
messages (open a tab, evaluate an expression, read events, take a screenshot); this module
speaks them with ``websockets``' synchronous client. No event loop is involved, so the tests
drive the browser the same way whichever backend (asyncio or trio) the server under test runs.

Also here: ``LabServer`` (``rawsse serve`` in a subprocess) and ``Relay``, a TCP relay in front
of it that records every byte the server sent, so a test can compare the page's own count with
what really crossed the wire.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.tools_support import REPO_ROOT, rawsse_command, read_ready_line, stop_process

# The flags that make Debian's chromium run headless as root in a container, and open no
# connection of its own (without the background-networking ones its connections are refused).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 15.0


def find_chromium() -> str:
    """The Chromium executable, or skip (or fail, where ``RAWSSE_REQUIRE_CHROMIUM`` is set:
    ``.ci/run`` sets it wherever it can install Chromium, so CI never skips silently)."""
    found = os.environ.get("RAWSSE_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if found:
        return found
    message = "Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
    if os.environ.get("RAWSSE_REQUIRE_CHROMIUM"):
        pytest.fail(message + ", and RAWSSE_REQUIRE_CHROMIUM says this run needs it")
    pytest.skip(message)


class CDPError(Exception):
    """The browser answered a DevTools call with an error, or not in time."""


class Chromium:
    """One headless Chromium process and its browser-level DevTools connection."""

    def __init__(self, executable: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="rawsse-lab-chromium-")
        self.log = open(os.path.join(self.profile, "chromium.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,  # its helpers form a group we can end as one
        )
        self._stack = contextlib.ExitStack()
        try:
            url = self._websocket_url()
            self.ws = self._stack.enter_context(connect(url, max_size=None, open_timeout=10))
        except BaseException:
            self.close()
            raise
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _websocket_url(self) -> str:
        # Chromium writes the port it picked, and the browser target's path, into the profile.
        port_file = pathlib.Path(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CDPError(f"chromium exited with {self.proc.returncode}; see {self.log.name}")
            lines = port_file.read_text().split("\n") if port_file.exists() else []
            if len(lines) >= 2 and lines[1].strip():
                return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
            time.sleep(0.05)  # polling a file Chromium writes; nothing to wait on instead
        raise CDPError(f"chromium wrote no DevToolsActivePort within {START_TIMEOUT_S} s")

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Send one DevTools command and return its result; events meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"no answer to {method} within {timeout_s} s")
            reply = self._receive(remaining)
            if reply is not None and reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    def pump(self, timeout_s: float) -> None:
        """Take the events that arrive within ``timeout_s`` (the wait between two polls)."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            if self._receive(remaining) is None:
                return

    def _receive(self, timeout_s: float) -> dict[str, Any] | None:
        try:
            raw = self.ws.recv(timeout=timeout_s)
        except TimeoutError:
            return None
        message: dict[str, Any] = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message

    def new_page(self) -> Page:
        """A fresh tab, with its console, network and page events recorded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, target, session)
        for domain in ("Runtime", "Page", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        return page

    def close(self) -> None:
        """Close the browser (ask, then end its process group) and remove its profile."""
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout_s=5)
        with contextlib.suppress(Exception):
            self._stack.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@dataclass
class Page:
    """One tab: evaluate JavaScript in it, wait on the DOM, read what it logged."""

    browser: Chromium
    target: str
    session: str

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, self.session)

    def events(self, method: str) -> list[dict[str, Any]]:
        """This tab's events named ``method`` so far (their ``params``)."""
        return [
            e["params"]
            for e in self.browser.events
            if e.get("sessionId") == self.session and e["method"] == method
        ]

    def navigate(self, url: str) -> None:
        loads = len(self.events("Page.loadEventFired"))
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        self.wait_until(lambda: len(self.events("Page.loadEventFired")) > loads, "page load")

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        """The value of ``expression`` in the page (JSON-like values come back as Python)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"{expression[:80]}: {text}")
        return result["result"].get("value")

    def wait_until(
        self,
        condition: Callable[[], Any],
        what: str,
        timeout_s: float = 15.0,
        every_s: float = 0.02,
    ) -> Any:
        """Poll ``condition`` (reading the DOM or the events) until it is truthy."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            self.browser.pump(every_s)

    def wait_for(self, expression: str, what: str | None = None, timeout_s: float = 15.0) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        return self.wait_until(lambda: self.evaluate(expression), what or expression, timeout_s)

    def console_errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and error-level log entries (failed
        loads, CSP violations)."""
        errors = [
            e["exceptionDetails"].get("exception", {}).get("description")
            or e["exceptionDetails"]["text"]
            for e in self.events("Runtime.exceptionThrown")
        ]
        errors += [
            " ".join(str(a.get("value", a.get("description", ""))) for a in e["args"])
            for e in self.events("Runtime.consoleAPICalled")
            if e["type"] in ("error", "assert")
        ]
        errors += [
            f"{e['entry']['source']}: {e['entry']['text']}"
            for e in self.events("Log.entryAdded")
            if e["entry"]["level"] == "error"
        ]
        return errors

    def press_ctrl_enter(self) -> None:
        """Ctrl+Enter on the focused element, as a person types it."""
        for kind in ("rawKeyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                {
                    "type": kind,
                    "modifiers": 2,  # Ctrl
                    "key": "Enter",
                    "code": "Enter",
                    "windowsVirtualKeyCode": 13,
                },
            )

    def screenshot(self, path: str | os.PathLike[str], width: int, height: int) -> None:
        """A PNG of the whole page at ``width`` CSS pixels (``height`` at least)."""
        import base64

        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        pathlib.Path(path).write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        with contextlib.suppress(CDPError):
            self.browser.call("Target.closeTarget", {"targetId": self.target})


# -- the server under test, and a relay that records what it sent ------------------------------


@dataclass
class LabServer:
    """``rawsse serve`` (the demo app, which mounts the lab at /) in a subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def lab_server(*args: str) -> Iterator[LabServer]:
    """Run ``rawsse serve --port 0 ARGS``; yield it once it listens; stop it with SIGINT."""
    log = tempfile.NamedTemporaryFile(prefix="rawsse-lab-server-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        rawsse_command("serve", "--port", "0", *args),
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=REPO_ROOT,
    )
    try:
        url = read_ready_line(proc, START_TIMEOUT_S)
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", url)
        assert match, f"rawsse serve listens on {url!r}, not on 127.0.0.1"
        yield LabServer(proc, int(match.group(1)), log.name)
    finally:
        stop_process(proc)
        log.close()
        os.unlink(log.name)


@dataclass
class _Pair:
    client: socket.socket
    server: socket.socket
    from_server: bytearray = field(default_factory=bytearray)


class Relay:
    """A TCP relay on 127.0.0.1 in front of ``upstream_port``: the browser talks to it, and it
    keeps every byte the server sent on each connection (``from_server``)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream_port = 0
        self.pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="lab-relay", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join(timeout=10)
        for pair in self.pairs:
            pair.client.close()
            pair.server.close()
        for sock in (self.listener, self._wake_r, self._wake_w):
            sock.close()

    def sent_by_server(self) -> list[bytes]:
        """What the server sent so far, one byte string per connection."""
        with self._lock:
            return [bytes(pair.from_server) for pair in self.pairs]

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "accept")
        selector.register(self._wake_r, selectors.EVENT_READ, "stop")
        # The loop ends when stop() writes to the wake-up socket.
        while True:
            for key, _ in selector.select():
                if key.data == "stop":
                    selector.close()
                    return
                if key.data == "accept":
                    client, _ = self.listener.accept()
                    server = socket.create_connection(("127.0.0.1", self.upstream_port))
                    pair = _Pair(client, server)
                    with self._lock:
                        self.pairs.append(pair)
                    selector.register(client, selectors.EVENT_READ, (pair, False))
                    selector.register(server, selectors.EVENT_READ, (pair, True))
                    continue
                pair, from_server = key.data
                source, sink = (
                    (pair.server, pair.client) if from_server else (pair.client, pair.server)
                )
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(source)
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    continue
                if from_server:
                    with self._lock:
                        pair.from_server += data
                with contextlib.suppress(OSError):
                    sink.sendall(data)


def body_of_stream(sent: list[bytes], stream_id: str) -> bytes:
    """The de-chunked body of the response whose head carries ``x-rawsse-stream-id:
    stream_id``, from what the relay saw the server send."""
    marker = re.compile(
        rb"\r\n(?i:x-rawsse-stream-id): " + re.escape(stream_id.encode()) + rb"\r\n"
    )
    found = [(wire, match) for wire in sent if (match := marker.search(wire))]
    assert len(found) == 1, f"{len(found)} connections carried stream {stream_id}"
    wire, match = found[0]
    head_end = wire.index(b"\r\n\r\n", match.start()) + 4
    assert b"transfer-encoding: chunked" in wire[:head_end].lower()
    body, rest = b"", wire[head_end:]
    while True:  # chunked framing, RFC 9112 section 7.1
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        body += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
