"""``rawsse serve`` as a subprocess, as a newcomer runs it: ready line, signals, workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support import parse_responses

READY_PREFIX = "rawsse listening on http://"


@contextmanager
def serve(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start ``python -m rawsse serve --port 0 ARGS``; yield the process and its real port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rawsse", "serve", "--port", "0", "--no-access-log", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(READY_PREFIX), (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.strip().rsplit(":", 1)[1])
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def http_get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ready_line_health_and_graceful_sigint(backend: str) -> None:
    with serve("--backend", backend) as (proc, port):
        [response] = parse_responses(http_get(port, "/healthz"))
        assert (response.status, response.body) == (200, b"ok\n")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None
        assert proc.stdout.read() == ""  # exactly one line on stdout


def test_sigterm_during_open_stream_ends_it_with_terminator() -> None:
    with serve("--token-delay", "0.05", "--shutdown-grace", "3") as (proc, port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            body = b'{"model":"lorem","max_tokens":1000,"stream":true,"messages":[{"role":"user","content":"hi"}]}'
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
            )
            data = sock.recv(65536)
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert proc.wait(timeout=10) == 0
        [response] = parse_responses(data)  # requires the chunked terminator
        assert response.status == 200


def test_workers_share_the_port() -> None:
    with serve("--workers", "2") as (proc, port):
        pids = set()
        for _ in range(40):
            [response] = parse_responses(http_get(port, "/healthz"))
            assert response.status == 200
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        pids.update(children)
        assert len(pids) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(int(pid), 0)


def test_workers_restart_a_crashed_worker() -> None:
    with serve("--workers", "2") as (proc, port):
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 2
        os.kill(int(children[0]), signal.SIGKILL)
        deadline = time.monotonic() + 10
        now_children: list[str] = []
        while time.monotonic() < deadline:
            now_children = subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
            if len(now_children) == 2 and children[0] not in now_children:
                break
            time.sleep(0.1)
        assert len(now_children) == 2 and children[0] not in now_children
        [response] = parse_responses(http_get(port, "/healthz"))
        assert response.status == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0


def test_bad_app_path_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rawsse", "serve", "no_such_module:app", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "cannot import 'no_such_module'" in result.stderr


def test_user_app_is_served(tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    (tmp_path / "myapp.py").write_text(
        "from rawsse import App, Response\n"
        "app = App()\n"
        "@app.get('/hi')\n"
        "async def hi(request):\n"
        "    return Response('hi there')\n"
    )
    env = {"PYTHONPATH": str(tmp_path)}
    with serve("myapp:app", env=env) as (proc, port):
        [response] = parse_responses(http_get(port, "/hi"))
        assert response.body == b"hi there"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
