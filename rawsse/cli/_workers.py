"""``--workers N``: N server processes sharing one port through SO_REUSEPORT, supervised.

Contract: ``supervise(argv, n, host, port)`` runs in the parent. It reserves the port (binding
a SO_REUSEPORT socket, which also resolves ``--port 0``), starts N children running
``rawsse serve`` with the same options on that port, waits until each is listening, prints the
single ready line, restarts a child that crashes (with a back-off), forwards SIGINT/SIGTERM to
every child for a graceful stop, and kills them if a second signal comes or the grace runs out.
The kernel spreads new connections over the children; each stream lives in one process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

__all__ = ["WORKER_ENV", "supervise"]

# Set in a child's environment: serve with SO_REUSEPORT and report readiness to the parent.
WORKER_ENV = "RAWSSE_WORKER"
_READY_PREFIX = "rawsse listening on "
_START_TIMEOUT_S = 30.0
_RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)


class _Worker:
    def __init__(self, index: int, argv: list[str]) -> None:
        self.index = index
        self.argv = argv
        self.proc: subprocess.Popen[str] | None = None
        self.ready = threading.Event()
        self.restarts = 0

    def start(self) -> None:
        self.ready.clear()
        env = dict(os.environ, **{WORKER_ENV: str(self.index)})
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            # Its own process group: a Ctrl+C on the terminal reaches only the supervisor,
            # which forwards one SIGTERM (two signals would force an immediate exit).
            start_new_session=True,
        )
        threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True).start()

    def _read_stdout(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(_READY_PREFIX):
                self.ready.set()
            else:
                sys.stdout.write(line)
                sys.stdout.flush()


def _reserve_port(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(sockaddr)  # bound, never listening: it holds the port but accepts nothing
    return sock


def supervise(serve_argv: Sequence[str], workers: int, host: str, port: int, grace_s: float) -> int:
    """Run ``workers`` children of ``rawsse serve``; returns the exit status."""
    reservation = _reserve_port(host, port)
    real_port = reservation.getsockname()[1]
    argv = [sys.executable, "-m", "rawsse", "serve", *serve_argv, "--port", str(real_port)]
    pool = [_Worker(i, argv) for i in range(workers)]
    signals_seen: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals_seen.append(signum)
        for worker in pool:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGKILL if len(signals_seen) > 1 else signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for worker in pool:
            worker.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        for worker in pool:
            if not worker.ready.wait(max(0.0, deadline - time.monotonic())):
                sys.stderr.write(f"rawsse: worker {worker.index} did not start\n")
                on_signal(signal.SIGTERM, None)
                on_signal(signal.SIGTERM, None)
                return 1
        reservation.close()
        shown_host = f"[{host}]" if ":" in host else host
        print(f"{_READY_PREFIX}http://{shown_host}:{real_port}", flush=True)
        # Supervise: restart crashed workers until a signal asks us to stop.
        while not signals_seen:
            time.sleep(0.2)
            for worker in pool:
                proc = worker.proc
                if proc is None or proc.poll() is None or signals_seen:
                    continue
                backoff = _RESTART_BACKOFF_S[min(worker.restarts, len(_RESTART_BACKOFF_S) - 1)]
                sys.stderr.write(
                    f"rawsse: worker {worker.index} exited with {proc.returncode}; "
                    f"restarting in {backoff:g} s\n"
                )
                time.sleep(backoff)
                worker.restarts += 1
                if not signals_seen:
                    worker.start()
        # Graceful stop: children got SIGTERM; wait for them, kill stragglers.
        deadline = time.monotonic() + grace_s + 5.0
        for worker in pool:
            if worker.proc is None:
                continue
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        return 0 if len(signals_seen) == 1 else 1
    finally:
        reservation.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
