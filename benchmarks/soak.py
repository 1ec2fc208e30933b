"""Soak: thousands of chat streams held for a long time, with churn; fails on any stream error
or on anything that grows without bound.

    python benchmarks/soak.py                                  # 5,000 streams, 10 minutes
    python benchmarks/soak.py --streams 2000 --duration 120 --max-tokens 40 --replay-keep-s 15
                                                               # the short run in results/soak.md
    python benchmarks/soak.py --json soak.json --markdown      # keep the samples; print a report

What it does:

1. Starts ``rawsse serve benchmarks.soak:soak_app`` as a subprocess: the demo chat models
   (``lorem``) behind ``mount_chat``, with a replay store bounded by ``--replay-mib`` and
   ``--replay-keep-s`` (a short keep time reaches the steady state sooner), ``/healthz`` and
   ``/metrics``.
2. Holds ``--streams`` OpenAI-style chat streams open from one asyncio client process: each asks
   for ``--min-tokens`` to ``--max-tokens`` tokens paced ``--token-delay`` apart (steady event
   flow), and is replaced when it ends. Churn: a stream ends by completing (``[DONE]`` and the
   chunked terminator), or, with probability ``--abort-fraction``, by the client leaving at a
   random moment (half with a FIN, half with an RST).
3. Every ``--sample-s`` seconds samples the server: RSS (``/proc/PID/status``), open file
   descriptors (``/proc/PID/fd``), streams and connections (``/metrics``; every connection is one
   task, so it stands for the task count), and event-loop lag: the latency of a ``GET /healthz``
   probe on a fresh connection, sent every ``--probe-s`` seconds (the worst and the median of
   each sample window).
4. At the end, closes every stream and checks the server returns to its baseline: no stream
   left, descriptors back.

It fails (exit status 1) when a stream errors (a status other than 200, a body that ends
without ``[DONE]`` and the terminator, a stream silent for ``--stall-s``, a refused
connection, a failed probe), or when, after the warm-up (the ramp, plus the longest stream's
life, plus the replay store's keep time, plus 10 s: by then every stream has been replaced and
the store forgets as fast as it learns), the last third of the samples is above the first third
by more than the tolerance: RSS by more than 10% or 16 MiB; descriptors by more than 1% of the
streams plus 10; lag by more than twice plus 50 ms. The samples also show the server's CPU
share and the machine's load, to tell a server that slows down from a machine that got busy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_LINGER_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"


# --- the server's application ---------------------------------------------------------------


def soak_app() -> Any:
    """The App ``rawsse serve benchmarks.soak:soak_app`` serves (configured by environment)."""
    from rawsse.app import App
    from rawsse.chat import demo_models, mount_chat
    from rawsse.metrics import metrics_handler
    from rawsse.replay import MemoryReplayStore
    from rawsse.request import Request
    from rawsse.response import Response

    token_delay_s = float(os.environ.get("RAWSSE_SOAK_TOKEN_DELAY_S", "1.0"))
    replay_mib = float(os.environ.get("RAWSSE_SOAK_REPLAY_MIB", "64"))
    replay_keep_s = float(os.environ.get("RAWSSE_SOAK_REPLAY_KEEP_S", "60"))
    app = App()

    async def healthz(request: Request) -> Response:
        return Response("ok\n")

    app.add_route("/healthz", healthz, ("GET",))
    app.add_route(
        "/metrics",
        metrics_handler(lambda: app.server.stats if app.server is not None else None),
        ("GET",),
    )
    store = MemoryReplayStore(
        max_total_bytes=int(replay_mib * 1024 * 1024), keep_after_end_s=replay_keep_s
    )
    mount_chat(app, demo_models(token_delay_s=token_delay_s), replay_store=store)
    return app


# --- the client -----------------------------------------------------------------------------


@dataclass
class Counts:
    opened: int = 0
    completed: int = 0
    aborted: int = 0
    errors: int = 0
    events: int = 0
    probes: int = 0
    error_reasons: dict[str, int] = field(default_factory=dict)


class SoakStream(asyncio.Protocol):
    """One chat stream: sends the request, counts events, knows how it ended."""

    def __init__(self, soak: Soak, request: bytes) -> None:
        self.soak = soak
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.opened = time.monotonic()
        self.last_activity = self.opened
        self.head = b""
        self.head_done = False
        self.tail = b""
        self.saw_done = False
        self.saw_terminator = False
        self.intentional = False
        self.failure: str | None = None
        self.abort_handle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if not self.head_done:
            self.head += data
            head, sep, rest = self.head.partition(b"\r\n\r\n")
            if not sep:
                return
            self.head_done = True
            self.head = b""
            status_line = head.split(b"\r\n", 1)[0]
            if not status_line.startswith(b"HTTP/1.1 200 "):
                self.fail(f"status {status_line.decode(errors='replace')}")
                return
            data = rest
        window = self.tail + data
        self.soak.counts.events += window.count(b"data: ") - self.tail.count(b"data: ")
        if b"data: [DONE]" in window:
            self.saw_done = True
        if self.saw_done and window.endswith(b"\r\n0\r\n\r\n"):
            self.saw_terminator = True
            assert self.transport is not None
            self.transport.close()  # done: the next stream gets a new connection
        self.tail = window[-32:]

    def fail(self, reason: str) -> None:
        if self.failure is None and not self.intentional:
            self.failure = reason
        if self.transport is not None:
            self.transport.abort()

    def leave(self, rst: bool) -> None:
        """The client goes away on purpose (churn)."""
        if self.transport is None or self.transport.is_closing():
            return
        self.intentional = True
        if rst:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            self.transport.abort()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.abort_handle is not None:
            self.abort_handle.cancel()
        self.soak.ended(self)


class Soak:
    def __init__(self, args: argparse.Namespace, port: int, pid: int) -> None:
        self.args = args
        self.port = port
        self.pid = pid
        self.counts = Counts()
        self.open: set[SoakStream] = set()
        self.running = True
        self.random = random.Random(args.seed)
        self.probe_ms: list[float] = []
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.last_cpu = (time.monotonic(), 0.0)

    # -- streams -------------------------------------------------------------------------------

    def _request(self) -> bytes:
        tokens = self.random.randint(self.args.min_tokens, self.args.max_tokens)
        body = json.dumps(
            {
                "model": "lorem",
                "stream": True,
                "max_tokens": tokens,
                "messages": [{"role": "user", "content": "soak"}],
            }
        ).encode()
        return (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )

    async def open_stream(self) -> None:
        loop = asyncio.get_running_loop()
        stream = SoakStream(self, self._request())
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: stream, "127.0.0.1", self.port), timeout=30
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self.error(f"connect: {type(exc).__name__}")
            return
        self.counts.opened += 1
        self.open.add(stream)
        if self.random.random() < self.args.abort_fraction:
            lifetime = self.args.token_delay * self.args.max_tokens
            stream.abort_handle = loop.call_later(
                self.random.uniform(0.5, lifetime), stream.leave, self.random.random() < 0.5
            )

    def ended(self, stream: SoakStream) -> None:
        self.open.discard(stream)
        if stream.intentional:
            self.counts.aborted += 1
        elif stream.failure is None and stream.saw_done and stream.saw_terminator:
            self.counts.completed += 1
        elif self.running or stream.failure is not None:
            self.error(stream.failure or "closed before [DONE] and the terminator")
        if self.running:
            self.spawn(self.open_stream())

    def error(self, reason: str) -> None:
        self.counts.errors += 1
        self.counts.error_reasons[reason] = self.counts.error_reasons.get(reason, 0) + 1

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def check_stalls(self) -> None:
        now = time.monotonic()
        for stream in list(self.open):
            if now - stream.last_activity > self.args.stall_s:
                stream.fail(f"silent for {self.args.stall_s:g} s")

    # -- probes and samples --------------------------------------------------------------------

    async def http_get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port), timeout
        )
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode())
            data = await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    async def probe_loop(self) -> None:
        while self.running:
            started = time.perf_counter()
            try:
                status, body = await self.http_get("/healthz")
                if status != 200 or body != b"ok\n":
                    self.error(f"probe answered {status}")
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                self.error(f"probe failed: {type(exc).__name__}")
            self.probe_ms.append((time.perf_counter() - started) * 1000)
            self.counts.probes += 1
            await asyncio.sleep(self.args.probe_s)

    async def server_metrics(self) -> dict[str, float]:
        status, body = await self.http_get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_s(self) -> float:
        """The server's user + system CPU time so far."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def sample(self) -> dict[str, Any]:
        metrics = await self.server_metrics()
        window, self.probe_ms = self.probe_ms, []
        now, cpu = time.monotonic(), self.cpu_s()
        last_at, last_cpu = self.last_cpu
        self.last_cpu = (now, cpu)
        sample = {
            "t_s": round(now - self.started, 1),
            "rss_mib": round(self.rss_mib(), 1),
            "fds": self.fds(),
            "server_streams": int(metrics["rawsse_streams_active"]),
            "server_connections": int(metrics.get("rawsse_connections_active", -1)),
            "client_streams": len(self.open),
            "events": self.counts.events,
            "lag_ms_max": round(max(window), 1) if window else None,
            "lag_ms_p50": round(statistics.median(window), 1) if window else None,
            "completed": self.counts.completed,
            "aborted": self.counts.aborted,
            "errors": self.counts.errors,
            # The server's share of one core over the window, and the machine's load: a lag
            # that grows while the load does is the machine, not the server.
            "server_cpu_pct": round(100 * (cpu - last_cpu) / max(now - last_at, 1e-9)),
            "load1": round(os.getloadavg()[0], 2),
        }
        self.samples.append(sample)
        return sample

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        args = self.args
        baseline = {"rss_mib": round(self.rss_mib(), 1), "fds": self.fds()}
        self.last_cpu = (time.monotonic(), self.cpu_s())
        say(f"baseline: RSS {baseline['rss_mib']} MiB, {baseline['fds']} fds")
        self.spawn(self.probe_loop())
        # Ramp: open the streams at --ramp-per-s.
        ramp_started = time.monotonic()
        batch = max(1, args.ramp_per_s // 10)
        for start in range(0, args.streams, batch):
            await asyncio.gather(
                *(self.open_stream() for _ in range(start, min(start + batch, args.streams)))
            )
            await asyncio.sleep(0.1)
        ramp_s = time.monotonic() - ramp_started
        say(f"ramp: {args.streams} streams in {ramp_s:.1f} s")
        say(_header())
        next_sample = time.monotonic()
        end = self.started + args.duration
        while time.monotonic() < end:
            next_sample += args.sample_s
            await asyncio.sleep(max(0.0, next_sample - time.monotonic()))
            self.check_stalls()
            say(_row(await self.sample()))
        # Wind down: every stream leaves; the server must come back to its baseline.
        self.running = False
        for stream in list(self.open):
            stream.leave(rst=False)
        settle = {"streams": None, "fds": None}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metrics = await self.server_metrics()
            settle = {"streams": int(metrics["rawsse_streams_active"]), "fds": self.fds()}
            if settle["streams"] == 0 and settle["fds"] <= baseline["fds"] + 2:
                break
            await asyncio.sleep(0.5)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        final = {"rss_mib": round(self.rss_mib(), 1), **settle}
        say(f"after: {final['streams']} streams, {final['fds']} fds, RSS {final['rss_mib']} MiB")
        return {
            "baseline": baseline,
            "ramp_s": round(ramp_s, 1),
            "final": final,
            "counts": asdict(self.counts),
            "samples": self.samples,
        }


# --- judging --------------------------------------------------------------------------------


def judge(args: argparse.Namespace, result: dict[str, Any]) -> list[str]:
    """The reasons the run failed (empty: it passed)."""
    problems = []
    counts = result["counts"]
    if counts["errors"]:
        problems.append(f"{counts['errors']} stream errors: {counts['error_reasons']}")
    final, baseline = result["final"], result["baseline"]
    if final["streams"] != 0:
        problems.append(f"{final['streams']} streams still open on the server after the run")
    if final["fds"] is None or final["fds"] > baseline["fds"] + 2:
        problems.append(f"descriptors did not return: {baseline['fds']} -> {final['fds']}")
    # Steady state: every stream opened by the ramp has been replaced at least once, and the
    # replay store has started forgetting finished streams.
    warmup = result["ramp_s"] + args.max_tokens * args.token_delay + args.replay_keep_s + 10
    steady = [s for s in result["samples"] if s["t_s"] >= warmup]
    if len(steady) < 6:
        problems.append(f"only {len(steady)} samples after the {warmup:.0f} s warm-up: run longer")
        return problems
    third = len(steady) // 3
    first, last = steady[:third], steady[-third:]

    def median(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows if r[key] is not None)

    rss_a, rss_b = median(first, "rss_mib"), median(last, "rss_mib")
    if rss_b > rss_a + max(0.10 * rss_a, 16):
        problems.append(f"RSS grew: {rss_a:.1f} -> {rss_b:.1f} MiB (medians, first/last third)")
    fds_a, fds_b = median(first, "fds"), median(last, "fds")
    if fds_b > fds_a + 0.01 * args.streams + 10:
        problems.append(f"descriptors grew: {fds_a:.0f} -> {fds_b:.0f}")
    lag_a, lag_b = median(first, "lag_ms_max"), median(last, "lag_ms_max")
    if lag_b > 2 * lag_a + 50:
        problems.append(f"event-loop lag grew: {lag_a:.1f} -> {lag_b:.1f} ms (worst per sample)")
    result["verdict"] = {
        "warmup_s": round(warmup, 1),
        "rss_mib_first_last": [rss_a, rss_b],
        "fds_first_last": [fds_a, fds_b],
        "lag_ms_max_first_last": [lag_a, lag_b],
    }
    return problems


# --- output ---------------------------------------------------------------------------------

_COLUMNS = [
    ("t_s", "t (s)"),
    ("rss_mib", "RSS MiB"),
    ("fds", "fds"),
    ("server_streams", "streams"),
    ("server_connections", "conns"),
    ("events", "events"),
    ("lag_ms_p50", "lag p50 ms"),
    ("lag_ms_max", "lag max ms"),
    ("completed", "done"),
    ("aborted", "left"),
    ("errors", "errors"),
    ("server_cpu_pct", "cpu %"),
    ("load1", "load"),
]


def _header() -> str:
    return "  ".join(f"{title:>10}" for _, title in _COLUMNS)


def _row(sample: dict[str, Any]) -> str:
    return "  ".join(f"{sample[key]!s:>10}" for key, _ in _COLUMNS)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def markdown(args: argparse.Namespace, result: dict[str, Any], problems: list[str]) -> str:
    counts = result["counts"]
    duration = result["samples"][-1]["t_s"] if result["samples"] else 0
    lines = [
        f"- command: `python benchmarks/soak.py {' '.join(sys.argv[1:])}`",
        f"- streams held: {args.streams} (lorem, {args.min_tokens}-{args.max_tokens} tokens, "
        f"{args.token_delay:g} s apart; {args.abort_fraction:.0%} leave early, half FIN, half "
        f"RST), backend {args.backend}, replay store {args.replay_mib:g} MiB / "
        f"{args.replay_keep_s:g} s",
        f"- ramp {result['ramp_s']} s; {duration:.0f} s in all; streams opened "
        f"{counts['opened']}, completed {counts['completed']}, left early {counts['aborted']}, "
        f"errors {counts['errors']}; events received {counts['events']:,} "
        f"({counts['events'] / max(duration, 1):,.0f}/s); {counts['probes']} /healthz probes",
        f"- server before: RSS {result['baseline']['rss_mib']} MiB, {result['baseline']['fds']} "
        f"fds; after every client left: {result['final']['streams']} streams, "
        f"{result['final']['fds']} fds, RSS {result['final']['rss_mib']} MiB",
    ]
    verdict = result.get("verdict")
    if verdict:
        lines.append(
            f"- steady state (after {verdict['warmup_s']} s warm-up), median of the first and "
            f"last third of the samples: RSS {verdict['rss_mib_first_last'][0]:.1f} -> "
            f"{verdict['rss_mib_first_last'][1]:.1f} MiB; fds {verdict['fds_first_last'][0]:.0f}"
            f" -> {verdict['fds_first_last'][1]:.0f}; worst /healthz latency per sample "
            f"{verdict['lag_ms_max_first_last'][0]:.1f} -> "
            f"{verdict['lag_ms_max_first_last'][1]:.1f} ms"
        )
    lines.append(f"- verdict: {'PASS' if not problems else 'FAIL: ' + '; '.join(problems)}")
    lines += ["", "| " + " | ".join(t for _, t in _COLUMNS) + " |"]
    lines.append("|" + "---:|" * len(_COLUMNS))
    for sample in result["samples"]:
        lines.append("| " + " | ".join(str(sample[k]) for k, _ in _COLUMNS) + " |")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--streams", type=int, default=5000, help="streams held (default 5000)")
    p.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    p.add_argument("--token-delay", type=float, default=1.0, help="seconds between tokens")
    p.add_argument("--min-tokens", type=int, default=20, help="shortest answer (tokens)")
    p.add_argument("--max-tokens", type=int, default=120, help="longest answer (tokens)")
    p.add_argument("--abort-fraction", type=float, default=0.25, help="streams that leave early")
    p.add_argument("--heartbeat", type=float, default=5.0, help="server heartbeat (s)")
    p.add_argument(
        "--replay-mib", type=float, default=64, help="replay store budget (MiB; rawsse's default)"
    )
    p.add_argument("--replay-keep-s", type=float, default=60, help="finished streams kept (s)")
    p.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--probe-s", type=float, default=0.5, help="seconds between /healthz probes")
    p.add_argument("--stall-s", type=float, default=30.0, help="a silent stream is an error")
    p.add_argument("--ramp-per-s", type=int, default=500, help="streams opened per second")
    p.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the samples and verdict here")
    p.add_argument("--markdown", action="store_true", help="print a markdown report on stdout")
    return p.parse_args(argv)


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < needed:
        raise SystemExit(f"soak: need {needed} file descriptors, the limit is {soft}")


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int]:
    env = {
        **os.environ,
        "RAWSSE_SOAK_TOKEN_DELAY_S": str(args.token_delay),
        "RAWSSE_SOAK_REPLAY_MIB": str(args.replay_mib),
        "RAWSSE_SOAK_REPLAY_KEEP_S": str(args.replay_keep_s),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rawsse",
            "serve",
            "benchmarks.soak:soak_app",
            "--port",
            "0",
            "--backend",
            args.backend,
            "--heartbeat",
            str(args.heartbeat),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("rawsse listening on http://"):
        proc.kill()
        raise SystemExit(f"soak: the server did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit(args.streams + 256)  # inherited by the server
    proc, port = start_server(args)
    try:
        result = asyncio.run(Soak(args, port, proc.pid).run())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    problems = judge(args, result)
    result["problems"] = problems
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        print(markdown(args, result, problems))
    say("PASS" if not problems else "FAIL:\n  " + "\n  ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
