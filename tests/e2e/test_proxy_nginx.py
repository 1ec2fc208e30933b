"""rawsse behind a real nginx (Debian's package), started by the test on loopback.

Each nginx runs from a config in ``tests/nginx/`` rendered into a private directory (its own
pid, logs and temp paths, ``daemon off``), in front of a ``rawsse serve`` subprocess, with
nginx's default ``proxy_buffering on``:

- events arrive one by one as they are sent: a paced stream's events reach the client through
  nginx at the pace the model produced them, because rawsse's ``X-Accel-Buffering: no`` turns
  nginx's buffering off for the stream. A control config that makes nginx ignore that header
  shows the same measurement catching buffering (the whole stream arrives at once);
- heartbeats pass through while the model is silent;
- a client that disconnects at nginx reaches rawsse: the producer stops
  (``rawsse_streams_active`` back to 0, ``rawsse_client_disconnects_total`` up by one), with a
  FIN or an RST;
- with both the minimal config (``proxy_pass`` only) and the one docs/deployment.md
  recommends (HTTP/1.1 keep-alive upstream).

nginx missing: the test tries ``apt-get install nginx-light`` once (as ``.ci/run`` does) and
skips, saying why, only if that fails.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rawsse.parser import EventParser
from rawsse.sse import Event

TEMPLATES = Path(__file__).parent / "nginx"
TOKEN_DELAY_S = 0.25
HEARTBEAT_S = 0.3


def _find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    found = _find_nginx()
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "nginx-light"],
            capture_output=True,
            timeout=300,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = _find_nginx()
        if found:
            return found
    pytest.skip("nginx is not installed and `apt-get install nginx-light` did not install it")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Upstream:
    proc: subprocess.Popen[bytes]
    port: int

    def metrics(self) -> dict[str, float]:
        """rawsse's own counters, read directly (not through nginx)."""
        status, _, body = http_get(self.port, "/metrics")
        assert status == 200
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rawsse",
            "serve",
            "--port",
            "0",
            "--token-delay",
            str(TOKEN_DELAY_S),
            "--heartbeat",
            str(HEARTBEAT_S),
            "--no-access-log",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("rawsse listening on http://"), line
        yield Upstream(proc, int(line.rsplit(":", 1)[1]))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


class Nginx:
    """One nginx process from a template in tests/nginx/, in its own directory."""

    def __init__(self, binary: str, template: str, upstream_port: int, prefix: Path) -> None:
        self.prefix = prefix
        self.port = free_port()
        text = (TEMPLATES / f"{template}.conf.template").read_text()
        text = text.replace("@PREFIX@", str(prefix)).replace("@LISTEN@", str(self.port))
        text = text.replace("@UPSTREAM@", str(upstream_port))
        assert "@" not in re.sub(r"#.*", "", text), "a placeholder was left in the config"
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(text)
        base = [binary, "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(self.conf)]
        check = subprocess.run([*base, "-t"], capture_output=True, timeout=30, check=False)
        assert check.returncode == 0, check.stderr.decode()
        self.proc = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(self._accepting, 10, "nginx to listen")

    def _accepting(self) -> bool:
        assert self.proc.poll() is None, self.error_log()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture(params=["minimal", "recommended"])
def nginx(
    request: pytest.FixtureRequest, nginx_binary: str, upstream: Upstream, tmp_path: Path
) -> Iterator[Nginx]:
    server = Nginx(nginx_binary, str(request.param), upstream.port, tmp_path)
    try:
        yield server
    finally:
        server.stop()


# --- a client that timestamps what it receives --------------------------------------------


def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk_all(body)
    return int(lines[0].split()[1]), headers, body


def _dechunk_all(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += rest[:size]
        body = rest[size + 2 :]


@dataclass
class Timed:
    """A stream read through nginx: when each event and each comment line arrived."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    events: list[tuple[float, Event]] = field(default_factory=list)
    comments: list[float] = field(default_factory=list)
    ended: bool = False


class StreamReader:
    """Reads an HTTP/1.1 response incrementally; decodes chunked framing; timestamps."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.started = time.monotonic()
        self.result = Timed()
        self._raw = b""
        self._in_body = False
        self._chunked = False
        self._body = b""  # de-chunked bytes not yet split into lines
        self._parser = EventParser()

    def read(self, *, until_events: int | None = None, timeout: float = 20) -> Timed:
        deadline = time.monotonic() + timeout
        while not self.result.ended:
            if until_events is not None and len(self.result.events) >= until_events:
                break
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"stream stalled: {self.result}") from None
            now = time.monotonic() - self.started
            if not data:
                self.result.ended = True
                break
            self._feed(data, now)
        return self.result

    def _feed(self, data: bytes, now: float) -> None:
        self._raw += data
        if not self._in_body:
            head, sep, rest = self._raw.partition(b"\r\n\r\n")
            if not sep:
                return
            lines = head.decode("latin-1").split("\r\n")
            self.result.status = int(lines[0].split()[1])
            self.result.headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:])
            }
            self._chunked = self.result.headers.get("transfer-encoding") == "chunked"
            self._in_body = True
            self._raw = rest
        if self._chunked:
            while True:
                size_line, sep, rest = self._raw.partition(b"\r\n")
                if not sep:
                    break
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    self.result.ended = True
                    self._raw = b""
                    break
                if len(rest) < size + 2:
                    break
                self._decoded(rest[:size], now)
                self._raw = rest[size + 2 :]
        else:
            self._decoded(self._raw, now)
            self._raw = b""

    def _decoded(self, data: bytes, now: float) -> None:
        self._body += data
        *lines, self._body = self._body.split(b"\n")
        self.result.comments += [now for line in lines if line.startswith(b":")]
        self.result.events += [(now, e) for e in self._parser.feed(data)]


def open_chat(port: int, *, max_tokens: int, **options: Any) -> socket.socket:
    body = json.dumps(
        {
            "model": "lorem",
            "stream": True,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}],
            "rawsse": options,
        }
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    return sock


def token_times(result: Timed) -> list[float]:
    """Arrival times of the events carrying a token (not the role chunk, finish or [DONE])."""
    times = []
    for at, event in result.events:
        if event.data == "[DONE]":
            continue
        delta = json.loads(event.data)["choices"]
        if delta and delta[0]["delta"].get("content"):
            times.append(at)
    return times


# --- the tests ----------------------------------------------------------------------------


def test_events_arrive_one_by_one_through_nginx(nginx: Nginx) -> None:
    sock = open_chat(nginx.port, max_tokens=6)
    try:
        result = StreamReader(sock).read()
    finally:
        sock.close()
    assert result.status == 200, result
    assert result.headers["content-type"].startswith("text/event-stream")
    # nginx acted on rawsse's X-Accel-Buffering (and, as with every X-Accel-* header, kept it).
    assert "x-accel-buffering" not in result.headers
    assert result.ended and result.events[-1][1].data == "[DONE]"
    times = token_times(result)
    assert len(times) == 6
    # Produced TOKEN_DELAY_S apart, received about as far apart: nothing held them back.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sorted(gaps)[len(gaps) // 2] > TOKEN_DELAY_S * 0.6, gaps
    assert times[-1] - times[0] > 5 * TOKEN_DELAY_S * 0.8, times
    assert times[0] < 2.0, "the first token came late"


def test_nginx_buffers_when_told_to_ignore_x_accel_buffering(
    nginx_binary: str, upstream: Upstream, tmp_path: Path
) -> None:
    """The control: with the header ignored, nginx's default buffering holds the whole
    stream back, and the same measurement sees every token arrive at once."""
    server = Nginx(nginx_binary, "ignore-accel-buffering", upstream.port, tmp_path)
    try:
        sock = open_chat(server.port, max_tokens=6)
        try:
            result = StreamReader(sock).read()
        finally:
            sock.close()
    finally:
        server.stop()
    times = token_times(result)
    assert len(times) == 6
    assert times[-1] - times[0] < TOKEN_DELAY_S / 2, times


def test_heartbeats_pass_through_nginx(nginx: Nginx) -> None:
    # The role chunk goes out at once; the first token only after ttft_s: heartbeats between.
    sock = open_chat(nginx.port, max_tokens=2, ttft_s=5 * HEARTBEAT_S + 0.1)
    try:
        result = StreamReader(sock).read()
    finally:
        sock.close()
    assert result.ended and result.status == 200
    first_token = token_times(result)[0]
    beats = [at for at in result.comments if at < first_token]
    assert len(beats) >= 3, (beats, first_token)
    # Each arrived on its own, about HEARTBEAT_S apart, not all at the end.
    assert beats[-1] - beats[0] > HEARTBEAT_S, beats


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_disconnect_at_nginx_stops_the_producer(
    nginx: Nginx, upstream: Upstream, how: str
) -> None:
    wait_for(lambda: upstream.metrics()["rawsse_streams_active"] == 0, 10, "an idle upstream")
    before = upstream.metrics()["rawsse_client_disconnects_total"]
    sock = open_chat(nginx.port, max_tokens=10_000, token_delay_s=0.02)
    try:
        StreamReader(sock).read(until_events=5)
        assert upstream.metrics()["rawsse_streams_active"] == 1
    finally:
        if how == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        sock.close()
    wait_for(
        lambda: upstream.metrics()["rawsse_streams_active"] == 0,
        10,
        "rawsse to see the disconnect through nginx",
    )
    assert upstream.metrics()["rawsse_client_disconnects_total"] == before + 1
    assert upstream.metrics()["rawsse_connections_active"] <= 2  # /metrics + a keep-alive one
    assert "[crit]" not in nginx.error_log() and "[alert]" not in nginx.error_log()


def test_plain_responses_through_nginx(nginx: Nginx) -> None:
    status, _, body = http_get(nginx.port, "/healthz")
    assert (status, body) == (200, b"ok\n")
    status, headers, body = http_get(nginx.port, "/v1/models")
    assert status == 200 and json.loads(body)["object"] == "list"
    assert headers["content-type"] == "application/json"
    status, _, _ = http_get(nginx.port, "/nope")
    assert status == 404
