"""The server ``rawsse bench`` starts itself when given no URL: ``rawsse serve`` in a subprocess.

Contract: ``demo_server(args, token_delay_s=...)`` is a context manager that starts ``python -m
rawsse serve --port 0 --token-delay S ARGS`` with this interpreter (``DEFAULT_TOKEN_DELAY_S``,
the demo app's own pace, unless told otherwise), waits (bounded) for its ready line ``rawsse
listening on http://HOST:PORT``, yields that base URL, and always stops the process on exit:
SIGINT (graceful shutdown), then SIGKILL if it has not exited within ``stop_timeout_s``. If the
server exits or stays silent before its ready line, ``ServerStartError`` carries its stderr's
tail.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import IO

__all__ = ["DEFAULT_TOKEN_DELAY_S", "ServerStartError", "demo_server"]

_READY_PREFIX = "rawsse listening on "
# A realistic pace: 50 tokens a second, as LLMs stream them (and the demo app's default).
# At 0 every event of a stream would arrive in one read, and the gaps would all be 0.
DEFAULT_TOKEN_DELAY_S = 0.02


def _stderr_tail(stderr: IO[bytes]) -> str:
    stderr.flush()
    stderr.seek(0)
    text = stderr.read().decode("utf-8", "replace").strip()
    return text[-2000:] or "(nothing on stderr)"


def _read_ready_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str | None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return None
            byte = os.read(proc.stdout.fileno(), 1)
            if not byte:
                return None
            line += byte
    return line.decode("utf-8", "replace").strip()


def _drain(stream: IO[bytes]) -> None:
    # The server may write more to stdout; an unread pipe would block it once full.
    with contextlib.suppress(OSError, ValueError):
        while stream.read(65536):
            pass


class ServerStartError(RuntimeError):
    """``rawsse serve`` exited or stayed silent instead of printing its ready line."""


@contextlib.contextmanager
def demo_server(
    args: Sequence[str] = (),
    *,
    cpu: int | None = None,
    token_delay_s: float = DEFAULT_TOKEN_DELAY_S,
    ready_timeout_s: float = 30.0,
    stop_timeout_s: float = 10.0,
) -> Iterator[str]:
    """Run the demo server on a free port at ``token_delay_s``; yield its base URL; stop it."""
    command = [
        *(sys.executable, "-m", "rawsse", "serve", "--port", "0"),
        *("--token-delay", f"{token_delay_s:g}"),
    ]
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=stderr)
        try:
            if cpu is not None:
                os.sched_setaffinity(proc.pid, {cpu})
            line = _read_ready_line(proc, ready_timeout_s)
            if line is None or not line.startswith(_READY_PREFIX):
                raise ServerStartError(
                    f"rawsse serve did not print its ready line (got {line!r}): "
                    + _stderr_tail(stderr)
                )
            threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
            yield line[len(_READY_PREFIX) :]
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=stop_timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
