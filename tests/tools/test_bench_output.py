"""``rawsse bench``'s report: requests/s, histograms (terminal, JSON, picture), the server it
starts and says so, refused options, and quiet broken pipes (``trace`` too)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from rawsse.bench._stats import DISPLAY_EDGES_US, Histogram
from tests.tools_support import (
    DONE_FRAME,
    LAST_CHUNK,
    REPO_ROOT,
    RawRequest,
    chat_chunk,
    chunk,
    raw_server,
    rawsse_command,
    rawsse_server,
    run_rawsse,
    sse_head,
)

GAP_S = 0.03


async def paced_chat(request: RawRequest, s: anyio.abc.SocketStream) -> None:
    """Three events 30 ms apart, then [DONE]: gaps of 30 ms as the client sees them."""
    await s.send(sse_head() + chunk(chat_chunk("a")))
    for text in ("b", "c"):
        await anyio.sleep(GAP_S)
        await s.send(chunk(chat_chunk(text)))
    await anyio.sleep(GAP_S)
    await s.send(chunk(DONE_FRAME) + LAST_CHUNK)


def result_of(done: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(done.stdout)
    return value


# ---------------------------------------------------------------- histograms


def test_coarse_buckets_count_every_value_under_its_bound() -> None:
    histogram = Histogram()
    values = [0, 7, 10, 11, 150, 1000, 1001, 2500, 20_000, 20_001, 10**10]
    for value in values:
        histogram.record(value)
    buckets = dict(histogram.coarse())
    assert sum(buckets.values()) == len(values)
    assert list(buckets) == [e for e in DISPLAY_EDGES_US if 10 <= e <= DISPLAY_EDGES_US[-1]]
    assert buckets[10] == 3  # 0, 7, 10
    assert buckets[20] == 1  # 11
    assert buckets[1000] == 2  # 1000, and 1001 within 1/64 of the bound
    assert buckets[5000] == 1  # 2500
    assert buckets[20_000] == 2  # 20,000 and 20,001 (same fine bucket)
    assert buckets[DISPLAY_EDGES_US[-1]] == 1  # beyond the last bound: counted under it
    assert Histogram().coarse() == []


def test_histogram_travels_as_json_whole() -> None:
    histogram = Histogram()
    for value in (3, 300, 30_000, 3_000_000):
        histogram.record(value, count=2)
    copy = Histogram.from_json(json.loads(json.dumps(histogram.to_json())))
    assert copy.buckets() == histogram.buckets()
    assert (copy.count, copy.total, copy.min, copy.max) == (8, histogram.total, 3, 3_000_000)
    assert copy.percentile(50) == histogram.percentile(50)


@pytest.mark.anyio
async def test_json_has_requests_per_second_and_the_buckets(anyio_backend: str) -> None:
    async with raw_server(paced_chat) as server:
        done = await run_rawsse(
            "bench", server.url("/v1/chat/completions"), "--requests", "12", "--streams", "4",
            "--json", "--backend", anyio_backend,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = result_of(done)
    assert result["completed"] == 12
    assert result["requests_per_s"] == pytest.approx(12 / result["duration_s"], rel=0.02)
    assert result["connections"] == 12  # the test server closes each connection
    assert result["connections_per_s"] > 0
    histograms = result["histograms"]
    for key in ("first_event_ms", "gap_ms", "ttfb_ms"):
        buckets = histograms[key]
        assert sum(b["count"] for b in buckets) == result[key]["count"], key
        bounds = [b["le"] for b in buckets]
        assert bounds == sorted(bounds)
        assert all(round(bound * 1000) in DISPLAY_EDGES_US for bound in bounds)
    # every gap is about 30 ms: all of them in the buckets from 20 to 50 ms, or a step around
    gaps = {b["le"]: b["count"] for b in histograms["gap_ms"] if b["count"]}
    assert result["gap_ms"]["count"] == 12 * 3
    assert sum(n for bound, n in gaps.items() if 20 < bound <= 100) >= 30, gaps
    assert result["server"] is None  # a URL was given: nothing started


@pytest.mark.anyio
async def test_table_draws_the_histograms_and_counts_in_good_grammar(anyio_backend: str) -> None:
    async with raw_server(paced_chat) as server:
        url = server.url("/v1/chat/completions")
        done = await run_rawsse(
            "bench", url, "--requests", "3", "--streams", "1", "--backend", anyio_backend
        )
        env = {**os.environ, "PYTHONIOENCODING": "ascii"}
        command = rawsse_command("bench", url, "--requests", "3", "--streams", "1")
        with anyio.fail_after(30):
            ascii_done = await anyio.run_process(command, check=False, cwd=REPO_ROOT, env=env)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert "(closed-loop, 1 stream, " in text
    assert "1 streams" not in text
    assert "requests 3 (" in text and "/s)" in text
    lines = text.splitlines()
    [header] = [line for line in lines if line.startswith("  histogram (ms)")]
    assert "time to first event" in header and "between events" in header
    rows = lines[lines.index(header) + 1 :]
    assert rows and all(row.lstrip().startswith("≤ ") for row in rows)
    assert any("█" in row for row in rows)
    # a terminal that cannot show block characters gets #
    assert ascii_done.returncode == 0, ascii_done.stderr
    ascii_text = ascii_done.stdout.decode("ascii")
    assert "<= " in ascii_text and "#" in ascii_text


# ---------------------------------------------------------------- the server bench starts


@pytest.mark.anyio
async def test_started_server_runs_at_a_realistic_pace_and_says_so(anyio_backend: str) -> None:
    done = await run_rawsse(
        "bench", "--requests", "4", "--streams", "2", "--json",
        "--backend", anyio_backend,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = result_of(done)
    server = result["server"]
    assert server["started"] is True
    assert server["token_delay_s"] == 0.02
    assert "a token every 20 ms" in server["description"]
    # tokens come 20 ms apart: the typical gap shows it (not all zeros)
    assert 10 <= result["gap_ms"]["p50"] <= 200, result["gap_ms"]
    table = await run_rawsse("bench", "--requests", "2", "--streams", "1", "--token-delay", "0")
    assert table.returncode == 0, table.stderr
    assert "server: started by bench: rawsse serve (the demo app, tokens unpaced" in (
        table.stdout.decode()
    )


# ---------------------------------------------------------------- refused options


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--requests", "0"], "argument --requests: must be at least 1, got 0"),
        (["--requests", "-2"], "argument --requests: must be at least 1"),
        (["--streams", "0"], "argument --streams: must be at least 1"),
        (["--processes", "0"], "argument --processes: must be at least 1"),
        (["--duration", "0"], "argument --duration: must be above 0"),
        (["--max-tokens", "0"], "argument --max-tokens: must be at least 1"),
        (["--requests", "1", "--duration", "1"], "at most one of --requests, --duration"),
        (
            ["http://127.0.0.1:1/", "--token-delay", "0"],
            "--token-delay sets up the server bench starts when given no URL",
        ),
        (["http://127.0.0.1:1/", "--server-args", "--workers 2"], "--server-args sets up"),
    ],
)
def test_unusable_options_are_one_line(args: list[str], needle: str) -> None:
    done = subprocess.run(
        rawsse_command("bench", *args), capture_output=True, text=True, timeout=30, cwd=REPO_ROOT
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("rawsse bench: ") and needle in line, line


# ---------------------------------------------------------------- --plot


def test_plot_draws_both_histograms(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    picture = tmp_path / "bench.png"
    with rawsse_server("--token-delay", "0.005") as url:
        done = subprocess.run(
            rawsse_command(
                "bench", url, "--requests", "20", "--streams", "2", "--plot", str(picture)
            ),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
        )
    assert done.returncode == 0, done.stderr
    assert f"histograms drawn to {picture}" in done.stderr
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 10_000


def test_plot_without_matplotlib_says_which_extra_before_running(tmp_path: Path) -> None:
    (tmp_path / "matplotlib.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'matplotlib'\", name='matplotlib')\n"
    )
    done = subprocess.run(
        rawsse_command("bench", "http://127.0.0.1:1/", "--plot", str(tmp_path / "x.png")),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO_ROOT}"},
    )
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "--plot needs matplotlib" in line and "pip install 'rawsse[bench]'" in line
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- broken pipes


def _with_closed_stdout(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``rawsse ARGS`` with stdout a pipe whose reader is gone, as ``... | head`` leaves it."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            rawsse_command(*args),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
        )
    finally:
        os.close(write_end)


def test_trace_into_a_closed_pipe_exits_quietly() -> None:
    with rawsse_server("--token-delay", "0.01") as url:
        done = _with_closed_stdout("trace", url, "--chat", "hello there " * 20)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


def test_trace_into_a_pipe_closed_midway_exits_quietly() -> None:
    # The reader takes a few lines, then leaves while the stream is still coming.
    with rawsse_server("--token-delay", "0.02") as url:
        proc = subprocess.Popen(
            rawsse_command("trace", url, "--chat", "word " * 100),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        assert proc.stdout is not None and proc.stderr is not None
        for _ in range(3):
            assert proc.stdout.readline()
        proc.stdout.close()
        status = proc.wait(timeout=30)
        err = proc.stderr.read()
        proc.stderr.close()
    assert status == 141, err
    assert err == ""


@pytest.mark.parametrize("output", [[], ["--json"]])
def test_bench_into_a_closed_pipe_exits_quietly(output: list[str]) -> None:
    with rawsse_server("--token-delay", "0") as url:
        done = _with_closed_stdout("bench", url, "--requests", "4", "--streams", "2", *output)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


def test_help_into_a_closed_pipe_exits_quietly() -> None:
    done = _with_closed_stdout("serve", "--help")
    assert done.returncode in (0, 141), done.stderr  # argparse itself ignores the failed write
    assert done.stderr == ""
