"""``--workers N``: N server processes sharing one port through SO_REUSEPORT, supervised.

Contract: ``supervise(argv, n, host, port, grace_s)`` runs in the parent and returns the exit
status. It checks that nothing listens on the port and reserves it (a SO_REUSEPORT socket bound
but never listening, which also resolves ``--port 0``); a port in use is a ``CommandError``.
It starts one child running ``rawsse serve`` with the same options on that port and waits until
it listens (a child that fails to start has said why on stderr: its exit status is returned,
and the other children are never started, so the reason is said once), then the others; then
prints the single ready line, and restarts a child that crashes (with a back-off).

Stopping: SIGINT or SIGTERM is forwarded to every child as one SIGTERM (a graceful shutdown);
a second signal kills them. Each child reports ``open N`` twice a second on a pipe of its own,
from a thread (``rawsse.cli._supervised``), so the supervisor waits for a child as long as it
makes progress: until ``grace_s + STALL_S`` after the signal, and then as long as its count of
open connections keeps falling, at least every ``STALL_S``. A child silent for ``STALL_S`` (the
whole process hung or stopped) or without progress past that (its event loop blocked, say) is
killed, once. What was cut is counted and logged -- connections a child's own
grace ran out on (its last line, ``cut N``), and those a killed child held by its last report
-- and the exit status is 1 when anything was cut or killed, else 0.

Children die with the supervisor: each asks Linux for SIGTERM when its parent dies and watches
its parent pid besides (``rawsse.cli._supervised``), so a SIGKILLed supervisor never leaves
workers holding the port. The kernel spreads new connections over the children; each stream
lives in one process.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from rawsse.cli._errors import RUNTIME
from rawsse.cli._supervised import (
    REPORT_PERIOD_S,
    STATUS_FD_ENV,
    SUPERVISOR_ENV,
    WORKER_ENV,
)

__all__ = ["STALL_S", "WORKER_ENV", "supervise"]

_READY_PREFIX = "rawsse listening on "
_START_TIMEOUT_S = 30.0
_RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
# A stopping child is killed when it has not reported for this long (hung), or has not closed a
# connection for this long once its grace is over. Ten report periods: a busy child on a loaded
# machine still reports well within it.
STALL_S = 5.0
# How often the supervisor looks at its children.
_POLL_S = 0.1

logger = logging.getLogger("rawsse.error")


class _Worker:
    def __init__(self, index: int, argv: list[str]) -> None:
        self.index = index
        self.argv = argv
        self.proc: subprocess.Popen[str] | None = None
        self.ready = threading.Event()
        self.restarts = 0
        # From the child's status pipe: its last count of open connections, when it came, and
        # how many connections its shutdown grace cut (its last line).
        self.open: int | None = None
        self.reported_at = 0.0
        self.cut: int | None = None
        # While stopping: the fewest open connections seen, and when that count last fell.
        self.fewest: int | None = None
        self.progress_at = 0.0
        self.killed = False
        self._status_reader: threading.Thread | None = None

    def start(self) -> None:
        self.ready.clear()
        self.open = self.cut = self.fewest = None
        self.reported_at = time.monotonic()
        read_end, write_end = os.pipe()
        env = dict(
            os.environ,
            **{
                WORKER_ENV: str(self.index),
                SUPERVISOR_ENV: str(os.getpid()),
                STATUS_FD_ENV: str(write_end),
            },
        )
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
                pass_fds=(write_end,),
                # Its own process group: a Ctrl+C on the terminal reaches only the supervisor,
                # which forwards one SIGTERM (two signals would force an immediate exit).
                start_new_session=True,
            )
        finally:
            os.close(write_end)
        threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True).start()
        self._status_reader = threading.Thread(
            target=self._read_status, args=(read_end,), daemon=True
        )
        self._status_reader.start()

    def finish(self) -> None:
        """Wait for the exited child's last status lines (its pipe ends when it exits)."""
        if self.proc is not None:
            self.proc.wait()
        if self._status_reader is not None:
            # A grandchild that inherited the pipe could keep it open: bounded.
            self._status_reader.join(timeout=REPORT_PERIOD_S * 4)

    def _read_stdout(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(_READY_PREFIX):
                self.ready.set()
            else:
                sys.stdout.write(line)
                sys.stdout.flush()

    def _read_status(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:
                kind, _, value = line.decode("ascii", "replace").partition(" ")
                try:
                    count = int(value)
                except ValueError:
                    continue
                now = time.monotonic()
                if kind == "open":
                    self.open = count
                    self.reported_at = now
                    if self.fewest is None or count < self.fewest:
                        self.fewest = count
                        self.progress_at = now
                elif kind == "cut":
                    self.cut = count

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signum)

    def begin_stopping(self, now: float) -> None:
        self.fewest = None  # the next report sets it (the last one may be older than a burst)
        self.progress_at = now
        self.reported_at = max(self.reported_at, now)


def _reserve_port(host: str, port: int) -> socket.socket:
    """Check that nothing listens on ``host:port``, then hold it with a SO_REUSEPORT socket."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _, sockaddr = infos[0]
    # A plain bind fails when anything listens there, even another server's SO_REUSEPORT
    # group, which our workers would otherwise join silently.
    with socket.socket(family, socktype, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(sockaddr)
        sockaddr = (sockaddr[0], probe.getsockname()[1], *sockaddr[2:])
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)  # bound, never listening: it holds the port but accepts nothing
    except BaseException:
        sock.close()
        raise
    return sock


def _wait_until_ready(worker: _Worker, deadline: float) -> int | None:
    """None once ``worker`` listens; else the exit status ``supervise`` should return."""
    while not worker.ready.wait(_POLL_S):
        proc = worker.proc
        assert proc is not None
        if proc.poll() is not None:
            # It said why on stderr (one line) and exited 1 or 2; anything else is a crash.
            if proc.returncode not in (1, 2):
                sys.stderr.write(
                    f"rawsse serve: worker {worker.index} exited with status "
                    f"{proc.returncode} before it was ready\n"
                )
                return RUNTIME
            return proc.returncode
        if time.monotonic() > deadline:
            sys.stderr.write(
                f"rawsse serve: worker {worker.index} did not start within {_START_TIMEOUT_S:g} s\n"
            )
            return RUNTIME
    return None


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _stop(pool: list[_Worker], grace_s: float, signals_seen: list[int]) -> int:
    """Wait for the signalled children as long as they make progress; returns the status."""
    started = time.monotonic()
    for worker in pool:
        worker.begin_stopping(started)
    while True:
        running = [worker for worker in pool if worker.alive()]
        if not running:
            break
        now = time.monotonic()
        for worker in running:
            if worker.killed:
                continue  # SIGKILLed, not yet reaped
            if len(signals_seen) > 1:  # a second signal: no more waiting
                worker.signal(signal.SIGKILL)
                worker.killed = True
                continue
            silent_s = now - worker.reported_at
            stalled = now > max(started + grace_s, worker.progress_at) + STALL_S
            if silent_s <= STALL_S and not stalled:
                continue
            held = worker.open
            why = (
                f"sent no report for {silent_s:.1f} s"
                if silent_s > STALL_S
                else f"closed no connection for {now - worker.progress_at:.1f} s"
            )
            logger.error(
                "worker %d %s while shutting down: killed, holding %s",
                worker.index,
                why,
                "an unknown number of connections" if held is None else _plural(held, "connection"),
            )
            worker.signal(signal.SIGKILL)
            worker.killed = True
        time.sleep(_POLL_S)
    for worker in pool:
        worker.finish()
    return _report_cuts(pool, grace_s, signals_seen)


def _report_cuts(pool: list[_Worker], grace_s: float, signals_seen: list[int]) -> int:
    cut = 0
    parts = []
    for worker in pool:
        if worker.killed:
            held = worker.open or 0
            cut += held
            parts.append(f"worker {worker.index} killed holding {_plural(held, 'connection')}")
        elif worker.cut:
            cut += worker.cut
            parts.append(f"worker {worker.index} cut {_plural(worker.cut, 'connection')}")
    if parts:
        logger.error(
            "shutdown cut %s (the grace was %g s): %s",
            _plural(cut, "connection"),
            grace_s,
            "; ".join(parts),
        )
        return 1
    return 0 if len(signals_seen) == 1 else 1


def supervise(serve_argv: Sequence[str], workers: int, host: str, port: int, grace_s: float) -> int:
    """Run ``workers`` children of ``rawsse serve``; returns the exit status."""
    from rawsse.cli._serve import listen_failure

    try:
        reservation = _reserve_port(host, port)
    except OSError as exc:
        raise listen_failure(host, port, exc) from exc
    real_port = reservation.getsockname()[1]
    argv = [sys.executable, "-m", "rawsse", "serve", *serve_argv, "--port", str(real_port)]
    pool = [_Worker(i, argv) for i in range(workers)]
    signals_seen: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals_seen.append(signum)
        for worker in pool:
            worker.signal(signal.SIGKILL if len(signals_seen) > 1 else signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        # The first child alone: if the options or the APP are wrong it says so once.
        pool[0].start()
        failed = _wait_until_ready(pool[0], deadline)
        if failed is None:
            for worker in pool[1:]:
                worker.start()
            for worker in pool[1:]:
                failed = _wait_until_ready(worker, deadline)
                if failed is not None:
                    break
        if failed is not None or signals_seen:
            for worker in pool:
                worker.signal(signal.SIGKILL)
                if worker.proc is not None:
                    worker.proc.wait()
            return failed if failed is not None else 1
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
                logger.error(
                    "worker %d exited with status %s; restarting it in %g s",
                    worker.index,
                    proc.returncode,
                    backoff,
                )
                time.sleep(backoff)
                worker.restarts += 1
                if not signals_seen:
                    worker.start()
        return _stop(pool, grace_s, signals_seen)
    finally:
        reservation.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for worker in pool:  # whatever happened above, no child outlives the supervisor
            worker.signal(signal.SIGKILL)
