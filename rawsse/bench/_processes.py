"""Several load processes for one benchmark: more streams than one process may open.

Why: a process may hold only so many descriptors (the hard ``RLIMIT_NOFILE``: 20,000 on some
machines), and one event loop on one core has a ceiling of its own. ``rawsse bench --processes
N`` splits the work over N processes, each with its own source address when the server is on
loopback (``rawsse.bench._sources``), and adds up what they measured.

Contract: ``split(config, n, sources)`` shares a ``BenchConfig`` out: streams as evenly as can
be, the request budget and the open-loop rate in proportion, the same duration, hold and ramp,
process ``i`` binding to ``sources[i]``. ``run_processes(configs, backend, tick)`` starts one
``python -m rawsse.bench._processes`` per config (the config as JSON on its stdin), shows
``tick(progress)`` every ``TICK_S`` with the processes' counters added up, forwards one SIGINT
to them when it gets one (each stops as at its end and reports), and returns the merged
``BenchState``, whether a SIGINT ended the run, and a line for each process that ended without
its results. A load process asks Linux to stop it (SIGINT) when its parent dies.

A load process writes JSON lines on stdout: ``{"progress": ...}`` every ``TICK_S``, then
``{"state": ..., "interrupted": ...}`` (``rawsse.bench._transfer``).
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import IO, Any

from rawsse.bench._drive import TICK_S, drive
from rawsse.bench._run import BenchConfig, BenchState
from rawsse.bench._transfer import (
    config_from_json,
    config_to_json,
    merge_states,
    progress_to_json,
    state_from_json,
    state_to_json,
)
from rawsse.jsonio import dumps, loads

__all__ = ["ProcessesResult", "run_processes", "split"]


def _shares(total: int, weights: list[int]) -> list[int]:
    """``total`` shared in proportion to ``weights``, adding up exactly."""
    whole = sum(weights)
    shares = [total * weight // whole for weight in weights]
    for index in range(total - sum(shares)):
        shares[index % len(shares)] += 1
    return shares


def split(config: BenchConfig, processes: int, sources: list[str | None]) -> list[BenchConfig]:
    """One config per load process (see the module contract); fewer when there is less work
    than processes (a process needs a stream and, in a closed loop, a request)."""
    processes = min(processes, config.streams, config.requests or config.streams)
    streams = _shares(config.streams, [1] * processes)
    requests = None
    if config.requests is not None:  # at least one each, the rest in proportion to streams
        requests = [1 + n for n in _shares(config.requests - processes, streams)]
    return [
        dataclasses.replace(
            config,
            streams=streams[i],
            requests=None if requests is None else requests[i],
            rate=None if config.rate is None else config.rate * streams[i] / config.streams,
            source_address=sources[i],
        )
        for i in range(processes)
    ]


@dataclasses.dataclass
class ProcessesResult:
    """What the load processes measured, together."""

    state: BenchState
    interrupted: bool
    failures: list[str]  # a line per process that ended without its results


class _Child:
    def __init__(self, index: int, config: BenchConfig, backend: str) -> None:
        self.index = index
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rawsse.bench._processes"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Its own session: a Ctrl-C on the terminal reaches the parent, which forwards one.
            start_new_session=True,
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdout: IO[bytes] = self.proc.stdout
        self.proc.stdin.write(
            dumps({"config": config_to_json(config), "backend": backend, "parent": os.getpid()})
        )
        self.proc.stdin.close()
        self.progress = BenchState()
        self.state: BenchState | None = None
        self.interrupted = False

    def take(self, line: bytes) -> None:
        message = loads(line)
        if "progress" in message:
            self.progress = state_from_json(message["progress"])
        elif "state" in message:
            self.state = state_from_json(message["state"])
            self.interrupted = bool(message["interrupted"])


def run_processes(
    configs: list[BenchConfig], backend: str, tick: Callable[[BenchState], None] | None = None
) -> ProcessesResult:
    """Run one load process per config; their results together (see the module contract)."""
    interrupted = False
    children: list[_Child] = []

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            for child in children:
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        children.extend(_Child(i, config, backend) for i, config in enumerate(configs))
        with selectors.DefaultSelector() as selector:
            for child in children:
                selector.register(child.stdout, selectors.EVENT_READ, child)
            next_tick = time.monotonic() + TICK_S
            while selector.get_map():
                # No deadline: each process's run is bounded by its own config.
                for key, _ in selector.select(max(0.0, next_tick - time.monotonic())):
                    child = key.data
                    line = child.stdout.readline()
                    if line:
                        child.take(line)
                    else:
                        selector.unregister(child.stdout)
                if time.monotonic() >= next_tick:
                    next_tick += TICK_S
                    if tick is not None:
                        tick(merge_states([child.progress for child in children]))
        failures = []
        for child in children:
            status = child.proc.wait()
            child.stdout.close()
            if child.state is None:
                failures.append(
                    f"load process {child.index} exited with status {status} without results"
                )
    finally:
        signal.signal(signal.SIGINT, previous)
        for child in children:
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait()
    states = [child.state for child in children if child.state is not None]
    return ProcessesResult(
        merge_states(states),
        interrupted or any(child.interrupted for child in children),
        failures,
    )


def _child_main() -> int:
    """A load process: run the config on stdin, report on stdout."""
    from rawsse.bench._command import raise_fd_limit
    from rawsse.cli._supervised import ask_for_parent_death_signal

    spec: dict[str, Any] = loads(sys.stdin.buffer.read())
    ask_for_parent_death_signal(signal.SIGINT)
    if os.getppid() != spec["parent"]:  # the parent is already gone
        return 1
    config = config_from_json(spec["config"])
    raise_fd_limit(config.streams)
    state = BenchState()
    out = sys.stdout.buffer

    def report(message: dict[str, Any]) -> None:
        out.write(dumps(message) + b"\n")
        out.flush()

    interrupted = drive(
        config, state, spec["backend"], lambda: report({"progress": progress_to_json(state)})
    )
    report({"state": state_to_json(state), "interrupted": interrupted})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_child_main())
    except BrokenPipeError:  # the parent left: nobody wants the results
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
