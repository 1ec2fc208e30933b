"""The held-stream scenario: many idle chat streams, heartbeats, a broadcast, then SIGTERM.

    python -m benchmarks.held                                   # 100,000 streams, 6 workers
    python -m benchmarks.held --streams 20000 --workers 2 --peers rawsse,node --idle 60 \\
        --broadcast 60

For each peer (``rawsse``: ``rawsse serve benchmarks.peers.held_app:app --workers W
--heartbeat 15``; ``rawsse-trio``: the same on trio; ``node``: ``benchmarks/peers/node_held.js``,
Node's ``http`` + ``cluster`` with W workers), on a fresh server:

1. *Open*: ``--clients`` processes of ``benchmarks/held_client.py``, each from its own source
   address (127.0.0.10, .11, ...) with source ports it picks itself, open N streams in all
   (``POST /v1/chat/completions``, model ``held``: the first token, then idle). Time to open all.
2. *Idle* (``--idle`` s, heartbeats every 15 s): server RSS (process tree) per stream, server CPU
   per 1,000 idle streams, heartbeat lateness (the interval between a heartbeat and the stream's
   previous write, minus 15 s) p50/p99/max.
3. *Broadcast* (``--broadcast`` s): every worker publishes a notice at each wall-clock multiple
   of 5 s and every stream gets it as a token; per notice, the time from its due time to its
   last delivery (over all streams), p50/p99 over the notices, and every delivery's delay.
4. *Shutdown*: SIGTERM to the server; time until it exits and until the last stream ended;
   streams that ended cleanly (a farewell frame, then the chunked terminator) vs cut.

Writes ``benchmarks/results/held.md`` (and ``.json``). The server is not pinned (its workers
use every core); the load processes share the same cores, which the report says, as
``SCHED_BATCH`` (their wake-ups do not preempt the server). From SIGTERM to the server's exit it
also reports the CPU the server, the load processes and everything else on the machine took.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from benchmarks import harness as h

HEARTBEAT_S = 15.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def server_cmd(peer: str, workers: int) -> list[str]:
    if peer == "node":
        return ["node", "benchmarks/peers/node_held.js", "{port}", str(workers)]
    cmd = [
        h.PY,
        "-m",
        "rawsse",
        "serve",
        "benchmarks.peers.held_app:app",
        "--port",
        "{port}",
        "--workers",
        str(workers),
        "--heartbeat",
        str(HEARTBEAT_S),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    if peer == "rawsse-trio":
        cmd += ["--backend", "trio"]
    return cmd


class Client:
    """One held_client process, driven over its stdin/stdout."""

    def __init__(self, url: str, streams: int, source: str) -> None:
        cmd = [
            h.PY,
            "-m",
            "benchmarks.held_client",
            url,
            "--streams",
            str(streams),
            "--source",
            source,
            "--heartbeat",
            str(HEARTBEAT_S),
            "--model",
            "held",
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=h.ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(h.ROOT)},
        )
        h._LIVE.append(self.proc)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode().strip())
                self.cond.notify_all()
        with self.cond:
            self.lines.append("EOF")
            self.cond.notify_all()

    def wait_for(self, prefix: str, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for i, line in enumerate(self.lines):
                    if line.startswith(prefix) or line == "EOF":
                        del self.lines[: i + 1]
                        return None if line == "EOF" else line
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(word.encode() + b"\n")
            self.proc.stdin.flush()

    def report(self, timeout_s: float = 60) -> dict[str, Any]:
        self.send("report")
        line = self.wait_for("{", timeout_s)
        return json.loads(line) if line else {}

    def stop(self) -> None:
        self.send("quit")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        h._stop(self.proc)


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the counters of the clients; per notice, the latest delivery over all clients."""
    out: dict[str, Any] = {
        k: sum(r.get(k) or 0 for r in reports)
        for k in ("held", "still_open", "heartbeats", "events", "ended", "clean", "cut")
    }
    failed: dict[str, int] = {}
    for r in reports:
        for kind, n in (r.get("failed") or {}).items():
            failed[kind] = failed.get(kind, 0) + n
    out["failed"] = failed
    for key in ("hb_late_ms", "notice_ms"):
        # p50 over clients' p50 (clients are alike), p99 and max the worst client's.
        parts = [r.get(key) or {} for r in reports]
        out[key] = {
            "p50": h.median([p.get("p50") for p in parts]),
            "p99": max((p["p99"] for p in parts if p.get("p99") is not None), default=None),
            "max": max((p["max"] for p in parts if p.get("max") is not None), default=None),
            "n": sum(p.get("n") or 0 for p in parts),
        }
    notices: dict[str, list[float]] = {}
    for r in reports:
        for due, (count, latest) in (r.get("by_notice") or {}).items():
            entry = notices.setdefault(due, [0, 0.0])
            entry[0] += count
            entry[1] = max(entry[1], latest)
    out["notices"] = {
        due: {"delivered": int(c), "last_ms": round(latest * 1000, 1)}
        for due, (c, latest) in sorted(notices.items())
    }
    ends = [r["last_end"] for r in reports if r.get("last_end")]
    out["last_end"] = max(ends) if ends else None
    return out


def run_peer(peer: str, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"peer": peer}
    trigger = os.path.join(tempfile.mkdtemp(prefix="rawsse-held-"), "notice")
    p = h.Peer(peer, tuple(server_cmd(peer, args.workers)), peer)
    env = {"RAWSSE_HELD_NOTICE_FILE": trigger}
    clients: list[Client] = []
    port = h.free_port()
    cmd = [a.replace("{port}", str(port)) for a in p.cmd]
    proc = subprocess.Popen(
        cmd,
        cwd=h.ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(h.ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=h._raise_child_nofile,
    )
    h._LIVE.append(proc)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().decode()
        if "listening" not in ready:
            raise RuntimeError(
                f"{peer} did not start: {ready} "
                f"{proc.stderr.read().decode()[-1000:] if proc.stderr else ''}"
            )
        errors: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=_keep_stderr, args=(proc, errors), daemon=True).start()
        time.sleep(1.0)
        base_kib = h.rss_kib(proc.pid)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        per = math.ceil(args.streams / args.clients)
        t0 = time.monotonic()
        for i in range(args.clients):
            n = min(per, args.streams - i * per)
            if n > 0:
                clients.append(Client(url, n, f"127.0.0.{10 + i}"))
        held_lines = [c.wait_for("HELD", 120 + args.streams / 200) for c in clients]
        result["open_s"] = round(time.monotonic() - t0, 2)
        held = sum(int(line.split()[1]) for line in held_lines if line)
        result["held"] = held
        log(f"{peer}: {held} of {args.streams} streams open in {result['open_s']} s")
        for c in clients:
            c.send("mark")
        time.sleep(2.0)
        held_kib = h.rss_kib(proc.pid)
        result.update(
            base_kib=base_kib,
            held_kib=held_kib,
            kib_per_stream=round((held_kib - base_kib) / held, 2) if held else None,
            workers=len(h.tree_pids(proc.pid)) - 1,
        )
        cpu0, w0 = h.cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.idle)
        cpu = (h.cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - w0)
        result["idle_cpu"] = round(cpu, 3)
        result["cpu_per_1000"] = round(cpu / (held / 1000), 4) if held else None
        result["idle"] = merge([c.report() for c in clients])
        result["peak_kib"] = h.rss_kib(proc.pid)
        log(
            f"{peer}: RSS {result['kib_per_stream']} KiB/stream, idle CPU {cpu:.3f} "
            f"({result['cpu_per_1000']} per 1,000), heartbeat lateness "
            f"{result['idle']['hb_late_ms']}"
        )
        if args.broadcast > 0:
            for c in clients:
                c.send("mark")
            open(trigger, "w").close()
            cpu0, w0 = h.cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.broadcast)
            os.unlink(trigger)
            result["broadcast_cpu"] = round(
                (h.cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - w0), 3
            )
            time.sleep(NOTICE_SETTLE_S)
            result["broadcast"] = merge([c.report() for c in clients])
            result["peak_kib"] = max(result["peak_kib"], h.rss_kib(proc.pid))
            lasts = [
                n["last_ms"]
                for n in result["broadcast"]["notices"].values()
                if n["delivered"] >= 0.99 * held
            ]
            result["notice_last_ms"] = {
                "p50": h.median(lasts),
                "p99": max(lasts) if lasts else None,
                "complete": len(lasts),
                "all": len(result["broadcast"]["notices"]),
            }
            log(
                f"{peer}: broadcast to last delivery {result['notice_last_ms']}, per delivery "
                f"{result['broadcast']['notice_ms']}"
            )
        pids = h.tree_pids(proc.pid)
        cpu_before = sum(h.process_cpu_seconds(pid) for pid in pids)
        clients_before = sum(h.process_cpu_seconds(c.proc.pid) for c in clients)
        busy_before = h.cpu_busy()
        procs_before = _all_cpu()
        t_term = time.time()
        w_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # The server's CPU while it shuts down: the last reading of each process before it
        # exits (polled every 10 ms).
        last_cpu = {pid: h.process_cpu_seconds(pid) for pid in pids}
        deadline = w_term + args.shutdown_timeout
        while proc.poll() is None and time.monotonic() < deadline:
            for pid in pids:
                cpu = h.process_cpu_seconds(pid)
                if cpu:
                    last_cpu[pid] = cpu
            time.sleep(0.01)
        if proc.poll() is not None:
            result["exit_s"] = round(time.monotonic() - w_term, 2)
            result["exit_code"] = proc.returncode
        else:
            result["exit_s"] = None
        busy_after = h.cpu_busy()
        ours = {*pids, *(c.proc.pid for c in clients)}
        result["shutdown_others_top"] = _top_others(procs_before, _all_cpu(), ours)
        result["shutdown_cpu_s"] = round(sum(last_cpu.values()) - cpu_before, 3)
        # The load processes' CPU from SIGTERM until the server exited (they read the
        # farewells and close their ends meanwhile), and what everything else on the machine
        # took of both cores in that time.
        clients_cpu = sum(h.process_cpu_seconds(c.proc.pid) for c in clients) - clients_before
        busy = sum(after[0] - busy_before[cpu][0] for cpu, after in busy_after.items())
        result["shutdown_clients_cpu_s"] = round(clients_cpu, 3)
        result["shutdown_others_cpu_s"] = round(
            max(0.0, busy - result["shutdown_cpu_s"] - clients_cpu), 3
        )
        for c in clients:
            c.wait_for("ENDED", 10)
        result["server_log"] = [line for line in errors if "cut" in line or "killed" in line]
        end = merge([c.report() for c in clients])
        result["shutdown"] = {k: end[k] for k in ("ended", "clean", "cut", "still_open")}
        result["shutdown"]["last_end_s"] = (
            round(end["last_end"] - t_term, 2) if end.get("last_end") else None
        )
        log(
            f"{peer}: SIGTERM -> exit in {result['exit_s']} s (code "
            f"{result.get('exit_code')}), {result['shutdown']}; CPU-s server "
            f"{result['shutdown_cpu_s']}, load processes {clients_cpu:.2f}, others "
            f"{result['shutdown_others_cpu_s']} ({result['shutdown_others_top']}); "
            f"{result['server_log']}"
        )
    finally:
        for c in clients:
            c.stop()
        h._stop(proc)
        with contextlib.suppress(OSError):
            os.unlink(trigger)
    return result


NOTICE_SETTLE_S = 6.0


def _all_cpu() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds so far (user + system), by pid."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{name}/stat") as f:
                    text = f.read()
                comm = text[text.index("(") + 1 : text.rindex(")")]
                fields = text.rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                out[int(name)] = (comm, cpu)
    return out


def _top_others(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], ours: set[int]
) -> str:
    """The processes other than ours that took the most CPU between two ``_all_cpu()``
    (kernel threads such as ksoftirqd included: they carry loopback traffic under load)."""
    used: dict[str, float] = {}
    for pid, (comm, cpu) in after.items():
        if pid in ours:
            continue
        spent = cpu - before.get(pid, (comm, 0.0))[1]
        if spent > 0.05:
            used[comm] = used.get(comm, 0.0) + spent
    top = sorted(used.items(), key=lambda kv: -kv[1])[:4]
    return ", ".join(f"{comm} {cpu:.2f}" for comm, cpu in top) or "none"


def _keep_stderr(proc: subprocess.Popen[bytes], lines: collections.deque[str]) -> None:
    """Read the server's stderr to its end, keeping its last lines (the shutdown's report)."""
    with contextlib.suppress(Exception):
        assert proc.stderr is not None
        for raw in proc.stderr:
            lines.append(raw.decode(errors="replace").strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.held",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--peers", default="rawsse,node")
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument(
        "--clients", type=int, default=None, help="load processes (default: one per 16,000 streams)"
    )
    parser.add_argument("--idle", type=float, default=60.0, help="idle phase, s")
    parser.add_argument("--broadcast", type=float, default=60.0, help="broadcast phase, s")
    parser.add_argument("--shutdown-timeout", type=float, default=90.0)
    parser.add_argument("--out", default=str(h.RESULTS / "held"))
    args = parser.parse_args(argv)
    if args.clients is None:
        args.clients = max(1, math.ceil(args.streams / 16_000))
    h.install_cleanup()
    header = (
        f"Run {datetime.datetime.now().strftime('%H:%M')} on {h.DATE}. Machine: "
        f"{h.machine_line(pinned=False)} {h.context_line()} Server not pinned: its "
        f"{args.workers} workers and the {args.clients} load processes share both cores (the "
        f"load processes as SCHED_BATCH: the same share, without preempting the server)."
    )
    results: dict[str, Any] = {"date": h.DATE, "header": header, "args": vars(args), "peers": {}}
    try:
        for peer in args.peers.split(","):
            try:
                results["peers"][peer] = run_peer(peer, args)
            except RuntimeError as exc:
                log(f"{peer}: FAILED {exc}")
                results["peers"][peer] = {"failed": str(exc)[-500:]}
    except KeyboardInterrupt:
        log("interrupted")
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    write_report(results, args.out)


def write_report(results: dict[str, Any], out: str) -> None:
    a = results["args"]
    rows = []
    for peer, r in results["peers"].items():
        if "held" not in r:
            rows.append([peer, "failed: " + r.get("failed", "?")[:80]] + ["—"] * 10)
            continue
        idle, sd = r.get("idle", {}), r.get("shutdown", {})
        nl = r.get("notice_last_ms") or {}
        rows.append(
            [
                peer,
                f"{h.fmt(r['held'])} / {h.fmt(a['streams'])}",
                h.fmt(r.get("open_s"), 1),
                f"{h.fmt(r.get('held_kib', 0) / 1024)} MiB "
                f"({h.fmt(r.get('peak_kib', 0) / 1024)} peak)",
                h.fmt(r.get("kib_per_stream"), 2),
                h.fmt((r.get("cpu_per_1000") or 0) * 100, 2) + "%",
                f"{h.fmt(idle.get('hb_late_ms', {}).get('p99'), 1)} / "
                f"{h.fmt(idle.get('hb_late_ms', {}).get('max'), 1)}",
                f"{h.fmt(nl.get('p50'))} / {h.fmt(nl.get('p99'))} ({nl.get('complete')}/"
                f"{nl.get('all')})",
                f"{h.fmt(r.get('exit_s'), 2)} ({h.fmt(r.get('shutdown_cpu_s'), 2)} CPU-s)",
                f"{h.fmt(sd.get('clean'))} clean, {h.fmt(sd.get('cut'))} cut, "
                f"{h.fmt(sd.get('still_open'))} open; last at {h.fmt(sd.get('last_end_s'), 2)} s",
            ]
        )
    md = [
        f"## Held streams (`python -m benchmarks.held --streams {a['streams']} --workers "
        f"{a['workers']} --clients {a['clients']} --idle {a['idle']:g} --broadcast "
        f"{a['broadcast']:g} --peers {a['peers']}`)",
        "",
        results["header"],
        "",
        h.markdown_table(
            [
                "server",
                "held / asked",
                "open all (s)",
                "server RSS held",
                "KiB per stream",
                "CPU per 1,000 idle streams (% of a core)",
                "heartbeat lateness p99 / max (ms)",
                "notice due -> last delivery p50 / p99 (ms) (complete/notices)",
                "SIGTERM -> exit (s) (server CPU)",
                "streams at shutdown",
            ],
            rows,
        ),
        "",
        "Heartbeat lateness: the interval between a heartbeat and the stream's previous write, "
        "minus 15 s, at the client. A notice is complete when at least 99% of the held streams "
        "got it; its last delivery is the latest over all of them.",
        "",
    ]
    text = "\n".join(md)
    print(text)
    with open(out + ".md", "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
