"""What every benchmark script shares: the peer servers, starting and stopping them, pinning,
RSS, the load clients, and markdown tables.

Contract: ``running(peer)`` starts one peer server pinned to ``SERVER_CPU`` in its own process
group and always stops it (SIGTERM to the group, then SIGKILL) when the block exits, also on
Ctrl+C or an exception; ``load(...)`` runs the load client pinned to ``CLIENT_CPU`` as a bounded
subprocess and returns its JSON; ``hold_streams(...)`` opens idle streams and reads the server's
RSS while they are held. Every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable
SERVER_CPU = 0
CLIENT_CPU = 1
# The machine's date when the run starts (results record it beside the time).
DATE = datetime.date.today().isoformat()


@dataclass(frozen=True)
class Peer:
    """A server under test: its command (``{port}`` is replaced) and a one-line description."""

    name: str
    cmd: tuple[str, ...]
    about: str
    needs: tuple[str, ...] = field(default=())  # modules or executables it needs

    def available(self) -> bool:
        for need in self.needs:
            if need.startswith("bin:"):
                if shutil.which(need[4:]) is None:
                    return False
            else:
                try:
                    __import__(need)
                except ImportError:
                    return False
        return True


def _rawsse(*extra: str, app: str = "app") -> tuple[str, ...]:
    return (PY, "-m", "rawsse", "serve", f"benchmarks.peers.rawsse_app:{app}", "--port",
            "{port}", "--no-access-log", "--log-level", "warning", *extra)


def _asgi_uvicorn(http: str) -> tuple[str, ...]:
    return (PY, "-m", "uvicorn", "benchmarks.peers.asgi_app:app", "--host", "127.0.0.1",
            "--port", "{port}", "--http", http, "--no-access-log", "--log-level", "warning",
            "--backlog", "4096")


PEERS: dict[str, Peer] = {
    p.name: p
    for p in [
        Peer("rawsse", _rawsse(), "rawsse, asyncio backend (stdlib loop)", ("rawsse",)),
        Peer("rawsse-uvloop", _rawsse("--uvloop"), "rawsse, asyncio backend on uvloop",
             ("rawsse", "uvloop")),
        Peer("rawsse-trio", _rawsse("--backend", "trio"), "rawsse, trio backend", ("trio",)),
        Peer("rawsse-ticker", _rawsse(app="ticker_app"),
             "rawsse, asyncio backend, paced by rawsse.Ticker", ("rawsse",)),
        Peer("rawsse-trio-ticker", _rawsse("--backend", "trio", app="ticker_app"),
             "rawsse, trio backend, paced by rawsse.Ticker", ("trio",)),
        Peer("rawsse-asyncio", _rawsse(app="asyncio_app"),
             "rawsse, asyncio backend, source in asyncio.sleep (the floor's own wait)",
             ("rawsse",)),
        Peer("rawsse-sleep", _rawsse(app="sleep_app"),
             "rawsse, asyncio backend, paced by rawsse.sleep between events", ("rawsse",)),
        Peer("rawsse-trio-sleep", _rawsse("--backend", "trio", app="sleep_app"),
             "rawsse, trio backend, paced by rawsse.sleep between events", ("trio",)),
        Peer("floor", (PY, "-m", "benchmarks.peers.floor", "--port", "{port}"),
             "bare asyncio.Protocol, hand-written chunked frames (stdlib loop)"),
        Peer("floor-uvloop", (PY, "-m", "benchmarks.peers.floor", "--port", "{port}", "--uvloop"),
             "the floor on uvloop", ("uvloop",)),
        Peer("aiohttp", (PY, "-m", "benchmarks.peers.aiohttp_peer", "--port", "{port}"),
             "aiohttp + aiohttp-sse (stdlib loop)", ("aiohttp", "aiohttp_sse")),
        Peer("uvicorn-httptools", _asgi_uvicorn("httptools"),
             "uvicorn (httptools, uvloop) + starlette + sse-starlette",
             ("uvicorn", "httptools", "sse_starlette")),
        Peer("uvicorn-h11", _asgi_uvicorn("h11"),
             "uvicorn (h11, uvloop) + starlette + sse-starlette", ("uvicorn", "sse_starlette")),
        Peer("hypercorn",
             (PY, "-m", "hypercorn", "benchmarks.peers.asgi_app:app", "--bind",
              "127.0.0.1:{port}", "--log-level", "warning", "--backlog", "4096"),
             "hypercorn (asyncio) + starlette + sse-starlette", ("hypercorn", "sse_starlette")),
        Peer("granian",
             ("granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}",
              "--workers", "1", "--backlog", "4096", "--log-level", "warning",
              "benchmarks.peers.asgi_app:app"),
             "granian (ASGI, 1 worker) + starlette + sse-starlette",
             ("bin:granian", "sse_starlette")),
        Peer("node", ("node", "benchmarks/peers/node_peer.js", "{port}"),
             "Node's built-in http module", ("bin:node",)),
    ]
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (via /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants, KiB (granian and hypercorn run child processes)."""
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants so far."""
    return sum(process_cpu_seconds(p) for p in tree_pids(pid))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the one process ``pid`` so far (0 once it is gone)."""
    with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


class ServerProcess:
    def __init__(self, peer: Peer, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.peer = peer
        self.port = port
        self.proc = proc

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)


_LIVE: list[subprocess.Popen[bytes]] = []


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    else:
        # The leader exited; make sure no child of its group is left behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc in _LIVE:
        _LIVE.remove(proc)


def _on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_cleanup() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so every ``finally`` runs; raise NOFILE."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def running(peer: Peer, *, extra_env: dict[str, str] | None = None,
            ready_timeout_s: float = 30.0) -> Iterator[ServerProcess]:
    """Start ``peer`` pinned to SERVER_CPU; yield once it accepts connections; always stop it."""
    port = free_port()
    cmd = ["taskset", "-c", str(SERVER_CPU), *(a.replace("{port}", str(port)) for a in peer.cmd)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra_env or {})
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=_raise_child_nofile,
    )
    _LIVE.append(proc)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"{peer.name} exited with {proc.returncode}: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{peer.name} did not listen within {ready_timeout_s}s") from None
                time.sleep(0.05)
        # Drain stderr in the background so a chatty server never blocks on a full pipe.
        import threading

        threading.Thread(target=_drain, args=(proc,), daemon=True).start()
        time.sleep(0.3)
        yield ServerProcess(peer, port, proc)
    finally:
        _stop(proc)


def _drain(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(Exception):
        assert proc.stderr is not None
        for _ in proc.stderr:
            pass


def _raise_child_nofile() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_busy() -> dict[int, tuple[float, float]]:
    """Per CPU: (busy seconds, total seconds) since boot, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                idle = v[3] + v[4]  # idle + iowait
                out[int(name[3:])] = ((sum(v[:8]) - idle) / tick, sum(v[:8]) / tick)
    return out


def cpu_others(before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]],
               cpu: int, own_cpu_s: float) -> float | None:
    """Share of ``cpu`` that processes other than ours used between two ``cpu_busy()``."""
    if cpu not in before or cpu not in after:
        return None
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return round(max(0.0, busy - own_cpu_s) / total, 3) if total > 0 else None


def loadgen(args: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.loadgen ARGS --cpu CLIENT_CPU``; return its JSON."""
    cmd = [PY, "-m", "benchmarks.loadgen", *args, "--cpu", str(CLIENT_CPU)]
    out = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, timeout=timeout_s, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = [ln for ln in out.stdout.decode().splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stderr.decode()[-2000:]}")
    return json.loads(lines[-1])


def bench_available() -> bool:
    return (ROOT / "rawsse" / "bench.py").exists()


def run_burst(server: ServerProcess, *, streams: int, duration_s: float, warmup_s: float = 1.0,
              n: int = 200, delay_s: float = 0.0, client: str = "loadgen") -> dict[str, Any]:
    """Fixed-concurrency load on ``POST /stream``; adds the server's CPU share to the result."""
    url = f"{server.base}/stream?n={n}&delay={delay_s}"
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    if client == "rawsse-bench":
        result = rawsse_bench(url, streams=streams, duration_s=duration_s + warmup_s)
    else:
        result = loadgen(["run", url, "--streams", str(streams), "--duration", str(duration_s),
                          "--warmup", str(warmup_s)], timeout_s=duration_s + warmup_s + 60)
    result["server_cpu"] = round((server.cpu_seconds() - cpu0) / (time.monotonic() - t0), 3)
    return result


def rawsse_bench(url: str, *, streams: int, duration_s: float) -> dict[str, Any]:
    """Run ``rawsse bench URL`` pinned to CLIENT_CPU; return its JSON."""
    cmd = ["taskset", "-c", str(CLIENT_CPU), PY, "-m", "rawsse", "bench", url, "--streams",
           str(streams), "--duration", str(duration_s), "--json", "--no-progress",
           "-X", "POST", "--data", '{"model": "lorem", "stream": true}',
           "--terminal", "[DONE]", "--cpu", str(CLIENT_CPU)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=duration_s + 60,
                         check=False)
    text = out.stdout.decode()
    start = text.find("{")
    if out.returncode != 0 or start < 0:
        raise RuntimeError(f"rawsse bench failed ({out.returncode}): {out.stderr.decode()[-2000:]}")
    return json.loads(text[start:])


def hold_streams(server: ServerProcess, *, streams: int, hold_for_s: float, hb_s: float,
                 settle_s: float = 1.0, timeout_s: float = 180.0) -> dict[str, Any]:
    """Open ``streams`` idle streams (heartbeat ``hb_s``); measure RSS before and while held."""
    # Warm the server (imports, first-request caches) so the baseline is the idle server.
    loadgen(["run", f"{server.base}/stream?n=5", "--streams", "4", "--requests", "40"], 60)
    time.sleep(0.5)
    base_kib = server.rss_kib()
    url = f"{server.base}/stream?n=0&hold={hold_for_s + timeout_s}&hb={hb_s}"
    cmd = [PY, "-m", "benchmarks.loadgen", "hold", url, "--streams", str(streams), "--hold-for",
           str(hold_for_s), "--heartbeat", str(hb_s), "--timeout", str(timeout_s), "--cpu",
           str(CLIENT_CPU)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    _LIVE.append(proc)
    held_kib = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s + hold_for_s + 30
        result: dict[str, Any] | None = None
        for raw in proc.stdout:
            line = raw.decode().strip()
            if line.startswith("HELD"):
                time.sleep(settle_s)
                held_kib = server.rss_kib()
            elif line.startswith("{"):
                result = json.loads(line)
                break
            if time.monotonic() > deadline:
                break
        proc.wait(timeout=30)
        if result is None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"hold client failed: {err}")
    finally:
        _stop(proc)
    result["base_kib"] = base_kib
    result["held_kib"] = held_kib
    if held_kib is not None and result["held"]:
        result["kib_per_stream"] = round((held_kib - base_kib) / result["held"], 2)
    return result


def median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def ratio(x: float | None, ref: float | None, digits: int = 2) -> str:
    if x is None or not ref:
        return "—"
    return f"{x / ref:.{digits}f}x"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages."""
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def context_line() -> str:
    """The code measured (commit, and whether rawsse/ had uncommitted changes) and the load."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, timeout=10,
            check=False).stdout.decode().strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "rawsse"], cwd=ROOT,
                               capture_output=True, timeout=10, check=False).stdout.decode().strip()
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "?", ""
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    state = " with uncommitted changes in rawsse/ (the tree is shared)" if dirty else ""
    return f"rawsse at commit {commit}{state}; load average at start {load}."


def machine_line(pinned: bool = True) -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB"
    pins = (f"; server pinned to CPU {SERVER_CPU}, load client to CPU {CLIENT_CPU}"
            if pinned else "")
    return (f"{model}, {os.cpu_count()} cores{mem}, Linux {os.uname().release}, "
            f"Python {sys.version.split()[0]}{pins}. Shared, noisy 2-core machine (other "
            f"engineers run tests on it).")
