"""Wire-core benchmark: encoding one chat chunk event, and parsing a stream of them.

Run: ``python benchmarks/codec.py`` (``--quick`` for a short, noisier run). Needs the ``bench``
extra for the peers (sse-starlette, httpx-sse); a missing peer is reported and skipped.

Encoding: nanoseconds per OpenAI ``chat.completion.chunk`` event, each contender building the
same fresh chunk dict and turning it into one SSE frame, best of several repeats. A row that
only builds the dict shows how much of each figure is the dict itself.

Parsing: MB/s and events/s for ``rawsse.parser.EventParser`` and httpx-sse's ``SSEDecoder`` on
the same byte stream cut into 4-16 KiB reads (seeded). httpx-sse is driven the way its
``iter_sse`` drives it: httpx's incremental UTF-8 decoder, its ``SSELineDecoder``, then one
``SSEDecoder.decode`` call per line.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Running a script puts its folder first on sys.path, where a sibling module (an http.py) would
# shadow the standard library module of that name that the peers import.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import codecs
import json
import os
import platform
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from rawsse.parser import EventParser
from rawsse.sse import encode_event, encode_json_data

CONTENT = [" Hello", ",", " world", "!", " How", " can", " I", " help", " you", " today", "?"]


def chunk(i: int) -> dict[str, Any]:
    """The dict an OpenAI-compatible server streams for one token."""
    return {
        "id": "chatcmpl-AYeYpKXx6Y1fMNz0ZTJv9cW3iWwOb",
        "object": "chat.completion.chunk",
        "created": 1732406400,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0ba0d124f1",
        "choices": [
            {
                "index": 0,
                "delta": {"content": CONTENT[i % len(CONTENT)]},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }


# --- encoding -------------------------------------------------------------------------------


def encoders() -> dict[str, Callable[[int], bytes | None]]:
    table: dict[str, Callable[[int], bytes | None]] = {
        "build the chunk dict only": lambda i: (chunk(i), None)[1],
        "rawsse encode_json_data (hot path)": lambda i: encode_json_data(chunk(i)),
        "rawsse encode_event (general)": lambda i: encode_event(chunk(i)),
        'b"data: " + orjson.dumps(d) + b"\\n\\n"': lambda i: (
            b"data: " + orjson.dumps(chunk(i)) + b"\n\n"
        ),
        'f"data: {json.dumps(d)}\\n\\n".encode()': lambda i: (
            f"data: {json.dumps(chunk(i))}\n\n".encode()
        ),
    }
    try:
        from sse_starlette import JSONServerSentEvent, ServerSentEvent
    except ImportError as exc:
        print(f"sse-starlette skipped ({exc}): pip install sse-starlette", file=sys.stderr)
    else:
        table["sse-starlette ServerSentEvent(json.dumps(d)).encode()"] = lambda i: ServerSentEvent(
            data=json.dumps(chunk(i))
        ).encode()
        table["sse-starlette JSONServerSentEvent(d).encode()"] = lambda i: JSONServerSentEvent(
            data=chunk(i)
        ).encode()
    return table


def ns_per_call(fn: Callable[[int], object], n: int) -> float:
    start = time.perf_counter_ns()
    for i in range(n):
        fn(i)
    return (time.perf_counter_ns() - start) / n


def bench_encode(n: int, repeats: int) -> None:
    table = encoders()
    results = dict.fromkeys(table, float("inf"))
    for _ in range(repeats):  # contenders take turns, so a busy moment hits them all alike
        for name, fn in table.items():
            results[name] = min(results[name], ns_per_call(fn, n))
    dict_ns = results["build the chunk dict only"]
    reference = results.get("sse-starlette JSONServerSentEvent(d).encode()")
    print(f"\nEncoding one chat.completion.chunk event ({n:,} events, best of {repeats})\n")
    print("| encoder | ns/event | ns/event without the dict | JSONServerSentEvent / this |")
    print("|---|---:|---:|---:|")
    for name, ns in results.items():
        ratio = f"{reference / ns:.1f}x" if reference else "n/a"
        net = "" if name.startswith("build") else f"{ns - dict_ns:,.0f}"
        print(f"| {name} | {ns:,.0f} | {net} | {ratio} |")
    frame = encode_json_data(chunk(0))
    print(f"\nOne frame is {len(frame)} bytes: {frame[:60]!r}...")


# --- parsing --------------------------------------------------------------------------------


def make_reads(stream: bytes, seed: int = 2026) -> list[bytes]:
    """Cut the stream into 4-16 KiB reads, as a socket would hand them over."""
    rnd = random.Random(seed)
    reads, i = [], 0
    while i < len(stream):
        size = rnd.randint(4 * 1024, 16 * 1024)
        reads.append(stream[i : i + size])
        i += size
    return reads


def parse_rawsse(reads: list[bytes]) -> list[str]:
    parser = EventParser()
    return [event.data for read in reads for event in parser.feed(read)]


def parse_httpx_sse(reads: list[bytes]) -> list[str]:
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder

    text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # httpx's TextDecoder
    line_decoder = SSELineDecoder()
    decoder = SSEDecoder()
    out = []
    for read in reads:
        for line in line_decoder.decode(text_decoder.decode(read)):
            sse = decoder.decode(line)
            if sse is not None:
                out.append(sse.data)
    for line in line_decoder.decode(text_decoder.decode(b"", True)) + line_decoder.flush():
        sse = decoder.decode(line)
        if sse is not None:
            out.append(sse.data)
    return out


def seconds(fn: Callable[[list[bytes]], list[str]], reads: list[bytes]) -> float:
    start = time.perf_counter()
    fn(reads)
    return time.perf_counter() - start


def bench_parse(n: int, repeats: int) -> None:
    streams = {
        "OpenAI chunks (data: only)": b"".join(encode_json_data(chunk(i)) for i in range(n)),
        "typed events (event: + id: + data:)": b"".join(
            encode_json_data(chunk(i), event="delta", id=str(i)) for i in range(n)
        ),
    }
    parsers: dict[str, Callable[[list[bytes]], list[str]]] = {"rawsse EventParser": parse_rawsse}
    try:
        import httpx_sse  # noqa: F401
    except ImportError as exc:
        print(f"httpx-sse skipped ({exc}): pip install httpx-sse", file=sys.stderr)
    else:
        parsers["httpx-sse SSEDecoder (+ SSELineDecoder)"] = parse_httpx_sse
    print(f"\nParsing {n:,} events fed in 4-16 KiB reads (best of {repeats})\n")
    print("| stream | parser | MB/s | events/s | vs httpx-sse |")
    print("|---|---|---:|---:|---:|")
    for stream_name, stream in streams.items():
        reads = make_reads(stream)
        expected = [json.dumps(chunk(i), separators=(",", ":")) for i in range(n)]
        for name, fn in parsers.items():
            if fn(reads) != expected:
                raise SystemExit(f"{name} parsed {stream_name} wrongly")
        timings = dict.fromkeys(parsers, float("inf"))
        for _ in range(repeats):
            for name, fn in parsers.items():
                timings[name] = min(timings[name], seconds(fn, reads))
        peer = timings.get("httpx-sse SSEDecoder (+ SSELineDecoder)")
        for name, s in timings.items():
            ratio = f"{peer / s:.2f}x" if peer else "n/a"
            print(
                f"| {stream_name} | {name} | {len(stream) / s / 1e6:,.0f} "
                f"| {n / s:,.0f} | {ratio} |"
            )


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="fewer iterations: fast but noisy")
    args = cli.parse_args()
    encode_n, parse_n, repeats = (20_000, 5_000, 3) if args.quick else (200_000, 50_000, 7)
    versions = f"Python {platform.python_version()} on {platform.machine()}"
    print(f"{versions}, {os.cpu_count()} CPUs, orjson {orjson.__version__}")
    bench_encode(encode_n, repeats)
    bench_parse(parse_n, repeats)


if __name__ == "__main__":
    main()
