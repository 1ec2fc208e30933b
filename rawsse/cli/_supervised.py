"""The worker's side of ``--workers``: report to the supervisor, and stop when it is gone.

Contract: ``SupervisorLink.from_environment()`` is None in a process the supervisor did not
start. In a worker it first asks Linux to send it SIGTERM when its parent dies (prctl
``PR_SET_PDEATHSIG``; the server treats it as any SIGTERM: a graceful shutdown), and
``orphaned`` says whether the supervisor died before that request was made. ``run(server)``,
a task beside the server, starts a thread that writes one status line to the supervisor's pipe
every ``REPORT_PERIOD_S``: ``open N`` (the connections the server holds), so the supervisor sees
a draining worker make progress and a hung one fall silent or stop making progress. A thread,
because a worker ending 16,000 streams keeps its event loop busy for seconds on end: a report
from the loop would wait for all of them, and the worker would look hung exactly while it
drains fastest. The task also watches for the supervisor's end where the parent-death signal
is not available or was lost: when the parent pid changes or the pipe breaks, it shuts the
server down gracefully itself. ``finished(cut)`` stops the reports and writes the last line,
``cut N``: the connections the shutdown grace ran out on.

The line protocol (``open N``, ``cut N``, ASCII, one per line) is read by
``rawsse.cli._workers``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Collection
from typing import Any

import anyio

__all__ = [
    "REPORT_PERIOD_S",
    "STATUS_FD_ENV",
    "SUPERVISOR_ENV",
    "WORKER_ENV",
    "SupervisorLink",
    "ask_for_parent_death_signal",
]

# Set in a worker's environment: its index (serve with SO_REUSEPORT, report readiness) ...
WORKER_ENV = "RAWSSE_WORKER"
# ... the supervisor's pid, and the descriptor of the pipe the status lines go to.
SUPERVISOR_ENV = "RAWSSE_SUPERVISOR_PID"
STATUS_FD_ENV = "RAWSSE_STATUS_FD"
# How often a worker reports (and checks its parent): the supervisor calls a worker silent
# for many periods hung.
REPORT_PERIOD_S = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

logger = logging.getLogger("rawsse.error")


def ask_for_parent_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Linux: send this process ``signum`` when the thread that started it ends (its parent
    process, for a single-threaded parent). Whether it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)) == 0
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this C library
        return False


class SupervisorLink:
    """A worker's link to its supervisor (see the module contract)."""

    def __init__(self, supervisor_pid: int, status_fd: int | None) -> None:
        self.supervisor_pid = supervisor_pid
        self._fd = status_fd
        if status_fd is not None:
            os.set_blocking(status_fd, False)  # a report never holds up the event loop
        self.gone = False  # the pipe broke: nobody reads the reports
        self._stopping = False
        self._reporter: threading.Thread | None = None
        self._done = threading.Event()

    @classmethod
    def from_environment(cls) -> SupervisorLink | None:
        """The link of a worker (asking for the parent-death signal), else None."""
        pid = os.environ.get(SUPERVISOR_ENV)
        if not pid or not os.environ.get(WORKER_ENV):
            return None
        fd = os.environ.get(STATUS_FD_ENV)
        ask_for_parent_death_signal()
        return cls(int(pid), int(fd) if fd else None)

    @property
    def orphaned(self) -> bool:
        """Whether the supervisor has already gone (this process has another parent now)."""
        return os.getppid() != self.supervisor_pid

    def _write(self, line: str) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, line.encode("ascii") + b"\n")
        except BlockingIOError:  # the supervisor is behind: it gets the next report
            pass
        except OSError:  # EPIPE: nobody reads any more
            self.gone = True
            self._fd = None

    async def run(self, server: Any) -> None:
        """Report ``open N`` every period; shut ``server`` down when the supervisor is gone."""
        if self._reporter is None:
            self._reporter = threading.Thread(
                target=self._report,
                args=(server.context.connections,),
                name="rawsse-status",
                daemon=True,
            )
            self._reporter.start()
        while True:
            if (self.gone or self.orphaned) and not self._stopping:
                self._stopping = True
                logger.warning(
                    "the supervisor (pid %d) is gone: shutting this worker down",
                    self.supervisor_pid,
                )
                server.shutdown()
            await anyio.sleep(REPORT_PERIOD_S)

    def _report(self, connections: Collection[object]) -> None:
        """The reporting thread: ``open N`` now and every period until ``finished``."""
        while self._fd is not None:
            self._write(f"open {len(connections)}")  # (a set's size: safe from a thread)
            if self._done.wait(REPORT_PERIOD_S):
                return

    def finished(self, cut: int) -> None:
        """The server has stopped: report how many connections its shutdown grace cut."""
        self._done.set()
        if self._reporter is not None:
            self._reporter.join()
        self._write(f"cut {cut}")
