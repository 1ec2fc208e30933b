"""The client's chunked-body decoding: nanoseconds per chunk, on the shapes the tools read.

Run: ``python benchmarks/chunked.py [--quick] [--against DIR]``. Each case decodes the same
bytes many times (best of several repeats) and reports ns per chunk. With ``--against DIR``
(another rawsse checkout, e.g. ``git worktree add /tmp/base <commit>``, or ``git archive
<commit> | tar -x -C /tmp/base``) the same cases run in a subprocess on that tree too, and a
ratio column compares them side by side (> 1: this tree is faster). Single-threaded and
CPU-bound: on a shared machine the figures move by 5-10 % from run to run, so compare ratios
from one run, not figures from two.

The cases are a realistic OpenAI chat stream (one ``data: {...chat.completion.chunk...}`` frame
of about 230 bytes per chunk, as rawsse and the vendors write it):

- ``bench one pass``: ``rawsse bench``'s hot path (``frame_chunks``): a whole response after
  its head in one read (50 chunks, ``[DONE]``, the last chunk).
- ``bench reader``: bench's whole per-read path (``ResponseReader.take``, head cache warm) on
  the same response cut into reads at seeded random points, so partial chunks take the general
  decoder (``ChunkedBody``) and the one pass resumes after them.
- ``client 64 KiB read``: ``ChunkedBody.feed`` on a 64 KiB read of whole chunks (the client
  reading a fast stream).
- ``client 4 chunks``: ``ChunkedBody.feed`` on reads of 4 whole chunks (under 1 KiB each).
- ``client random cuts``: ``ChunkedBody.feed`` on a stream cut at seeded random points.
- ``client traced``: the same with framing records on (``rawsse trace``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable

_PREFIX = (
    b'data: {"id":"chatcmpl-0123456789abcdef","object":"chat.completion.chunk",'
    b'"created":1795500000,"model":"lorem","system_fingerprint":"fp_rawsse","choices":'
)
FRAME = _PREFIX + (
    b'[{"index":0,"delta":{"content":"lorem "},"logprobs":null,"finish_reason":null}]}\n\n'
)
DONE = b"data: [DONE]\n\n"
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)


def _chunk(frame: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(frame), frame)


def _cut(data: bytes, seed: int, low: int, high: int) -> list[bytes]:
    rng = random.Random(seed)
    reads, i = [], 0
    while i < len(data):
        step = rng.randint(low, high)
        reads.append(data[i : i + step])
        i += step
    return reads


def _best(run: Callable[[], object], repeats: int, loops: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(loops):
            run()
        best = min(best, time.perf_counter() - started)
    return best / loops


def measure(quick: bool) -> dict[str, float]:
    """ns per chunk for each case, on the rawsse found on ``sys.path``."""
    from rawsse.bench._chunks import frame_chunks
    from rawsse.bench._head import HeadCache
    from rawsse.bench._response import ResponseReader
    from rawsse.bench._run import BenchState
    from rawsse.client._body import ChunkedBody
    from rawsse.client._exchange import PreparedRequest, Target

    repeats, loops = (3, 200) if quick else (7, 1000)
    body = _chunk(FRAME) * 50 + _chunk(DONE) + b"0\r\n\r\n"
    response = HEAD + body
    results: dict[str, float] = {}

    def one_pass() -> None:
        taken = frame_chunks(response, len(HEAD))
        assert taken is not None
        assert taken[3]

    results["bench one pass"] = _best(one_pass, repeats, loops) / 51

    prepared = PreparedRequest.build(Target.from_url("http://127.0.0.1:1/v1"), "POST", [], b"{}")
    cache = HeadCache(prepared)
    reads = _cut(response, 7, 200, 3000)

    def reader() -> None:
        reader = ResponseReader(BenchState(), cache, 0.0, False, "[DONE]", None)
        for data in reads:
            if reader.take(data, 1.0):
                break
        else:
            raise AssertionError("the response did not complete")

    reader()  # warm the head cache
    results["bench reader"] = _best(reader, repeats, loops) / 51

    whole = _chunk(FRAME) * (64 * 1024 // len(_chunk(FRAME)))
    count = whole.count(b"\r\ndata:")
    results["client 64 KiB read"] = (
        _best(lambda: ChunkedBody().feed(whole), repeats, max(loops // 10, 20)) / count
    )

    four = [_chunk(FRAME) * 4] * 50

    def small() -> None:
        decoder = ChunkedBody()
        for data in four:
            decoder.feed(data)

    results["client 4 chunks"] = _best(small, repeats, loops // 5) / 200

    stream = _chunk(FRAME) * 400
    cuts = _cut(stream, 11, 100, 4000)

    def random_cuts() -> None:
        decoder = ChunkedBody()
        for data in cuts:
            decoder.feed(data)

    results["client random cuts"] = _best(random_cuts, repeats, loops // 20) / 400

    def traced() -> None:
        decoder = ChunkedBody([])
        for data in cuts:
            decoder.feed(data)

    results["client traced"] = _best(traced, repeats, loops // 20) / 400
    return {name: seconds * 1e9 for name, seconds in results.items()}


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="fewer repeats: fast but noisy")
    cli.add_argument("--against", metavar="DIR", help="another rawsse checkout to compare with")
    cli.add_argument("--rounds", type=int, default=3, help="alternating runs per tree (3)")
    cli.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # subprocess mode
    args = cli.parse_args()
    if args.json:
        print(json.dumps(measure(args.quick)))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"this tree": here}
    if args.against:
        trees["against"] = os.path.abspath(args.against)
    # Rounds alternate the trees and each case keeps its best figure, so that a burst of load
    # from elsewhere on the machine does not land on one tree only.
    figures: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for label, tree in trees.items():
            command = [sys.executable, os.path.abspath(__file__), "--json"]
            command += ["--quick"] if args.quick else []
            env = dict(os.environ, PYTHONPATH=tree)
            output = subprocess.run(command, env=env, check=True, capture_output=True, cwd=tree)
            best = figures.setdefault(label, {})
            for name, value in json.loads(output.stdout).items():
                best[name] = min(best.get(name, value), value)
    names = list(figures["this tree"])
    if "against" in figures:
        print("| case | ns/chunk, this tree | ns/chunk, against | ratio |")
        print("|---|---:|---:|---:|")
        for name in names:
            ours, theirs = figures["this tree"][name], figures["against"][name]
            print(f"| {name} | {ours:.0f} | {theirs:.0f} | {theirs / ours:.2f}x |")
    else:
        print("| case | ns/chunk |")
        print("|---|---:|")
        for name in names:
            print(f"| {name} | {figures['this tree'][name]:.0f} |")


if __name__ == "__main__":
    main()
