"""Real ``rawsse serve`` processes for the scale-out tests: start, read the ready line, stop.

A ``Node`` is one ``python -m rawsse serve --port 0 ...`` (or its ``--workers`` supervisor);
its stderr goes to a file the test can read (the log lines it must or must not print).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.tools_support import read_ready_line, stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT_S = 30.0


@dataclass
class Node:
    """A running server process: where it listens and what it logged."""

    proc: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process dies mid-whatever, as on a crash or an OOM kill."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rawsse", "serve", "--port", "0", "--no-access-log", *args]


@contextlib.contextmanager
def node(*args: str, env: Mapping[str, str] | None = None) -> Iterator[Node]:
    """Run ``rawsse serve --port 0 ARGS`` until the block ends (SIGINT, then SIGKILL)."""
    with tempfile.TemporaryDirectory(prefix="rawsse-node-") as tmp:
        stderr_path = Path(tmp) / "stderr.log"
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                serve_command(*args),
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
            )
        try:
            url = read_ready_line(
                proc, _START_TIMEOUT_S, lambda: "stderr: " + stderr_path.read_text()
            )
            yield Node(proc, url, stderr_path)
        finally:
            stop_process(proc, 15)


def run_serve(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``rawsse serve ARGS`` expecting it to exit by itself (a start-up failure)."""
    return subprocess.run(
        serve_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
