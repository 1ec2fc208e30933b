"""``rawsse bench`` at scale: several load processes, source addresses over 127.0.0.0/8 and
source ports bench binds itself, results added up, and load processes that end with their
parent."""

from __future__ import annotations

import errno
import json
import resource
import signal
import socket
import subprocess
from typing import Any

import anyio
import anyio.abc
import pytest

from rawsse.bench._run import BenchConfig, BenchState
from rawsse.bench._sources import (
    EXPLICIT_FROM_STREAMS,
    PORT_RANGE,
    SourcePorts,
    open_socket_from,
    plan_sources,
)
from rawsse.bench._transfer import (
    config_from_json,
    config_to_json,
    merge_states,
    state_from_json,
    state_to_json,
)
from rawsse.client._exchange import Target
from tests.tools_support import (
    DONE_FRAME,
    LAST_CHUNK,
    REPO_ROOT,
    RawRequest,
    chat_chunk,
    chunk,
    raw_server,
    rawsse_command,
    sse_head,
)


async def quick_chat(request: RawRequest, s: anyio.abc.SocketStream) -> None:
    await s.send(sse_head() + chunk(chat_chunk("a")) + chunk(DONE_FRAME) + LAST_CHUNK)


async def held_stream(request: RawRequest, s: anyio.abc.SocketStream) -> None:
    await s.send(sse_head() + chunk(b"data: hi\n\n"))
    await anyio.sleep(30)


def in_thread_run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=60, cwd=REPO_ROOT, **kwargs)


# ---------------------------------------------------------------- planning and merging


def test_source_addresses_only_where_they_help() -> None:
    assert plan_sources("127.0.0.1", 3, 30) == ["127.1.0.1", "127.1.0.2", "127.1.0.3"]
    assert plan_sources("127.0.0.1", 1, 64) == [None]  # one process, few streams: the kernel's
    assert plan_sources("127.0.0.1", 1, EXPLICIT_FROM_STREAMS) == ["127.1.0.1"]
    assert plan_sources("10.1.2.3", 2, 30) == [None, None]  # not ours to choose
    assert plan_sources("::1", 2, 30) == [None, None]
    assert plan_sources("localhost", 2, 30) == [None, None]  # an unresolved name
    many = plan_sources("127.0.0.1", 300, 300)
    assert len(set(many)) == 300 and many[255] == "127.1.1.0"


def test_split_shares_the_work_exactly() -> None:
    from rawsse.bench._processes import split

    config = BenchConfig(Target.from_url("http://127.0.0.1:9/"), streams=10, requests=101, rate=50)
    parts = split(config, 3, ["127.1.0.1", "127.1.0.2", "127.1.0.3"])
    assert [p.streams for p in parts] == [4, 3, 3]
    assert sum(p.requests or 0 for p in parts) == 101
    assert sum(p.rate or 0 for p in parts) == pytest.approx(50)
    assert [p.source_address for p in parts] == ["127.1.0.1", "127.1.0.2", "127.1.0.3"]
    # never more processes than streams, nor than requests
    assert len(split(config.__class__(config.target, streams=2, requests=100), 4, [None] * 4)) == 2
    assert len(split(config.__class__(config.target, streams=8, requests=3), 4, [None] * 4)) == 3


def test_config_and_state_travel_and_merge() -> None:
    config = BenchConfig(
        Target.from_url("http://127.0.0.1:9/v1/x?y=1"),
        headers=(("A", "b"),),
        body=bytes(range(256)),
        streams=3,
        duration_s=2.0,
        source_address="127.1.0.4",
    )
    assert config_from_json(json.loads(json.dumps(config_to_json(config)))) == config
    one, two = BenchState(), BenchState()
    for state, base in ((one, 10), (two, 100)):
        state.started = state.completed = base
        state.events = 3 * base
        state.connections = base
        state.errors["timeout"] = 1
        state.error_samples["timeout"] = f"slow {base}"
        state.statuses[200] = base
        state.gap_us.record(base * 1000, count=base)
        state.t_start, state.t_end = float(base), float(base + 5)
        state.cpu_start, state.cpu_end = 1.0, 1.5
        state.t_first_connect, state.t_last_connect = float(base), float(base + 1)
    copies = [state_from_json(json.loads(json.dumps(state_to_json(s)))) for s in (one, two)]
    merged = merge_states(copies)
    assert (merged.started, merged.events, merged.connections) == (110, 330, 110)
    assert merged.errors["timeout"] == 2
    assert merged.error_samples["timeout"] == "slow 10"
    assert merged.statuses == {200: 110}
    assert merged.gap_us.count == 110 and merged.gap_us.max == 100_000
    assert (merged.t_start, merged.t_end) == (10.0, 105.0)
    assert merged.cpu_s == pytest.approx(1.0)
    assert merged.connections_per_s == pytest.approx(110 / 91)


# ---------------------------------------------------------------- source ports


@pytest.mark.anyio
async def test_connections_come_from_the_chosen_address_and_ports(anyio_backend: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        source = SourcePorts("127.1.0.9")
        first = source._next
        socks = [await open_socket_from("127.0.0.1", port, source) for _ in range(3)]
        try:
            local = [sock.getsockname() for sock in socks]
        finally:
            for sock in socks:
                sock.close()
    assert {address for address, _ in local} == {"127.1.0.9"}
    ports = [p for _, p in local]
    low, high = PORT_RANGE
    assert all(low <= p <= high for p in ports)
    expected = [first + i if first + i <= high else low + (first + i - high - 1) for i in range(3)]
    assert ports == expected  # in turn, not the kernel's choice


@pytest.mark.anyio
async def test_a_taken_source_port_is_skipped(anyio_backend: str) -> None:
    low, _ = PORT_RANGE
    with socket.socket() as taken, socket.socket() as listener:
        taken.bind(("127.1.0.10", low + 7))
        taken.listen()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        source = SourcePorts("127.1.0.10")
        source._next = low + 7
        sock = await open_socket_from("127.0.0.1", listener.getsockname()[1], source)
        with sock:
            assert sock.getsockname() == ("127.1.0.10", low + 8)
    assert source.skipped == 1


@pytest.mark.anyio
async def test_no_free_source_port_is_a_connect_error(anyio_backend: str) -> None:
    from rawsse.bench import _sources

    low, _ = PORT_RANGE
    takers = []
    try:
        for offset in range(_sources.ATTEMPTS):
            taker = socket.socket()
            takers.append(taker)
            taker.bind(("127.1.0.11", low + offset))
            taker.listen()
        source = SourcePorts("127.1.0.11")
        source._next = low
        with pytest.raises(OSError, match=r"no free source port on 127\.1\.0\.11") as caught:
            await open_socket_from("127.0.0.1", 9, source)
        assert caught.value.errno == errno.EADDRNOTAVAIL
    finally:
        for taker in takers:
            taker.close()


# ---------------------------------------------------------------- several load processes


@pytest.mark.anyio
async def test_processes_share_the_load_from_their_own_addresses(anyio_backend: str) -> None:
    async with raw_server(quick_chat) as server:
        done = await anyio.to_thread.run_sync(
            in_thread_run,
            rawsse_command(
                "bench", server.url("/v1/chat/completions"), "--processes", "3",
                "--requests", "30", "--streams", "6", "--json", "--backend", anyio_backend,
            ),
        )  # fmt: skip
        peers = [request.peer for request in server.requests]
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["processes"] == 3
    assert result["source_addresses"] == ["127.1.0.1", "127.1.0.2", "127.1.0.3"]
    assert (result["requests"], result["completed"], result["errors"]) == (30, 30, 0)
    assert result["connections"] == 30  # the test server closes every connection
    assert result["first_event_ms"]["count"] == 30
    assert {address for address, _ in peers} == {"127.1.0.1", "127.1.0.2", "127.1.0.3"}
    low, high = PORT_RANGE
    assert all(low <= port <= high for _, port in peers)
    table = done.stderr.decode()
    assert "Traceback" not in table


@pytest.mark.anyio
async def test_streams_beyond_one_processs_descriptors_take_more_processes(
    anyio_backend: str,
) -> None:
    # Hard limit 600: a load process keeps 256 for itself, so 400 held streams need two.
    limit = 600

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    async with raw_server(held_stream) as server:
        done = await anyio.to_thread.run_sync(
            lambda: in_thread_run(
                rawsse_command(
                    "bench", server.url("/idle"), "--streams", "400", "--hold", "1",
                    "--ramp-s", "0.2", "--json", "--backend", anyio_backend,
                ),
                preexec_fn=low_limit,
            )
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [said] = done.stderr.decode().splitlines()
    assert said == (
        "rawsse bench: 400 streams need more descriptors than one process may open (600): "
        "running 2 load processes"
    )
    result = json.loads(done.stdout)
    assert result["processes"] == 2
    assert (result["peak_streams"], result["completed"], result["errors"]) == (400, 400, 0)
    assert result["connections"] == 400
    assert result["connections_per_s"] > 0


@pytest.mark.anyio
async def test_ctrl_c_stops_every_load_process_and_reports(anyio_backend: str) -> None:
    async with raw_server(quick_chat) as server:
        command = rawsse_command(
            "bench", server.url("/v1/chat/completions"), "--processes", "2", "--duration", "30",
            "--streams", "4", "--json", "--backend", anyio_backend,
        )  # fmt: skip
        async with await anyio.open_process(command, cwd=REPO_ROOT) as process:
            with anyio.fail_after(20):
                while len(server.requests) < 20:  # both processes are running requests
                    await anyio.sleep(0.05)
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(20):
                await process.wait()
            assert process.stdout is not None
            stdout = b"".join([part async for part in process.stdout])
    assert process.returncode == 130
    result = json.loads(stdout)
    assert result["interrupted"] is True
    assert result["completed"] >= 20
    assert result["duration_s"] < 20


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.anyio
async def test_load_processes_end_with_their_parent(anyio_backend: str) -> None:
    async with raw_server(held_stream) as server:
        command = rawsse_command(
            "bench", server.url("/idle"), "--processes", "2", "--streams", "4",
            "--hold", "60", "--json", "--backend", anyio_backend,
        )  # fmt: skip
        async with await anyio.open_process(command, cwd=REPO_ROOT) as process:
            with anyio.fail_after(20):
                while len(server.requests) < 4:
                    await anyio.sleep(0.05)
            pgrep = await anyio.run_process(["pgrep", "-P", str(process.pid)], check=False)
            children = [int(pid) for pid in pgrep.stdout.split()]
            assert len(children) == 2
            process.kill()
            await process.wait()
        with anyio.fail_after(15):
            while not all(_gone(pid) for pid in children):  # "load processes outlived it"
                await anyio.sleep(0.05)
