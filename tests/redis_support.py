"""A real ``redis-server`` for tests: started on a free port with persistence off, stopped after.

``RedisServer`` also speaks just enough RESP (blocking, on its own socket) to drive the server
from a test: ``command("CLIENT", "KILL", "TYPE", "pubsub")``, ``kill()`` (SIGKILL: every
client's connection breaks), ``restart()`` (same port, empty), ``pause(seconds)``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
MISSING = (
    "redis-server is not installed: these tests run a real Redis (Debian: "
    "apt-get install redis-server; .ci/run installs it)"
)
# The settings docs/scaling.md recommends, minus persistence (tests start empty).
SETTINGS = ("--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction")
_START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _encode(*args: str | bytes | int) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _exact(self, size: int) -> bytes:
        while len(self.buffer) < size + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
        return data

    def reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if rest == b"-1" else self._exact(int(rest))
        if kind == b"*":
            return None if rest == b"-1" else [self.reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")


class RedisServer:
    """One ``redis-server`` process on ``port``."""

    def __init__(self, port: int, workdir: str) -> None:
        self.port = port
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not os.path.exists(REDIS_SERVER):
            pytest.fail(MISSING)
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *SETTINGS,
                "--dir",
                self.workdir,
                "--logfile",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                if self.command("PING") == "PONG":
                    return
            except (OSError, RuntimeError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def command(self, *args: str | bytes | int, timeout_s: float = 5.0) -> Any:
        """Run one command on a fresh connection and return its reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as sock:
            sock.sendall(_encode(*args))
            return _Reader(sock).reply()

    def kill(self) -> None:
        """SIGKILL the server (like a crash: every connection breaks, nothing is saved)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        """Kill it and start an empty one on the same port."""
        self.kill()
        self.start()

    @contextlib.contextmanager
    def paused(self, seconds: float) -> Iterator[None]:
        """Every client's commands wait ``seconds`` (CLIENT PAUSE) during the block."""
        self.command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
        try:
            yield
        finally:
            self.command("CLIENT", "UNPAUSE")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Start a ``redis-server`` on a free port for the block."""
    with tempfile.TemporaryDirectory(prefix="rawsse-redis-") as workdir:
        server = RedisServer(free_port(), workdir)
        server.start()
        try:
            yield server
        finally:
            server.stop()
