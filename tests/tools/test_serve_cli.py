"""``rawsse serve`` as a subprocess, as a newcomer runs it: ready line, signals, workers."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from tests.support import parse_responses
from tests.tools_support import REPO_ROOT

READY_PREFIX = "rawsse listening on http://"


@contextmanager
def serve(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start ``python -m rawsse serve --port 0 ARGS``; yield the process and its real port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rawsse", "serve", "--port", "0", "--no-access-log", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(READY_PREFIX), (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.strip().rsplit(":", 1)[1])
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def http_get(port: int, path: str, headers: str = "") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ready_line_health_and_graceful_sigint(backend: str) -> None:
    with serve("--backend", backend) as (proc, port):
        [response] = parse_responses(http_get(port, "/healthz"))
        assert (response.status, response.body) == (200, b"ok\n")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None
        assert proc.stdout.read() == ""  # exactly one line on stdout


def test_sigterm_during_open_stream_ends_it_with_terminator() -> None:
    with serve("--token-delay", "0.05", "--shutdown-grace", "3") as (proc, port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            body = b'{"model":"lorem","max_tokens":1000,"stream":true,"messages":[{"role":"user","content":"hi"}]}'
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
            )
            data = sock.recv(65536)
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert proc.wait(timeout=10) == 0
        [response] = parse_responses(data)  # requires the chunked terminator
        assert response.status == 200


def test_workers_share_the_port() -> None:
    with serve("--workers", "2") as (proc, port):
        pids = set()
        for _ in range(40):
            [response] = parse_responses(http_get(port, "/healthz"))
            assert response.status == 200
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        pids.update(children)
        assert len(pids) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(int(pid), 0)


def test_workers_restart_a_crashed_worker() -> None:
    with serve("--workers", "2") as (proc, port):
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 2
        os.kill(int(children[0]), signal.SIGKILL)
        deadline = time.monotonic() + 10
        now_children: list[str] = []
        while time.monotonic() < deadline:
            now_children = subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
            if len(now_children) == 2 and children[0] not in now_children:
                break
            time.sleep(0.1)
        assert len(now_children) == 2 and children[0] not in now_children
        [response] = parse_responses(http_get(port, "/healthz"))
        assert response.status == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0


def test_bad_app_path_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rawsse", "serve", "no_such_module:app", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "cannot import 'no_such_module'" in result.stderr


def test_user_app_is_served(tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    (tmp_path / "myapp.py").write_text(
        "from rawsse import App, Response\n"
        "app = App()\n"
        "@app.get('/hi')\n"
        "async def hi(request):\n"
        "    return Response('hi there')\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}"}
    with serve("myapp:app", env=env) as (proc, port):
        [response] = parse_responses(http_get(port, "/hi"))
        assert response.body == b"hi there"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


# --- Bad input: one line on stderr, exit 2 (usage) or 1 (runtime), never a traceback --------


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rawsse", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], status: int, *needles: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rawsse serve: "), lines
    for needle in needles:
        assert needle in lines[0], lines
    assert result.returncode == status, (result.returncode, result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "status", "needles"),
    [
        (["--port", "-1"], 2, ["--port", "0 to 65535", "-1"]),
        (["--port", "70000"], 2, ["--port", "0 to 65535", "70000"]),
        (["--port", "eighty"], 2, ["--port", "not a port number"]),
        (["--host", "999.1.1.1"], 2, ["--host 999.1.1.1", "not a valid IP address"]),
        (["--workers", "0"], 2, ["--workers", "at least 1", "0"]),
        (["--workers", "-3"], 2, ["--workers", "at least 1", "-3"]),
        (["--heartbeat", "-5"], 2, ["--heartbeat", "at least 0", "-5"]),
        (["--token-delay", "-1"], 2, ["--token-delay", "at least 0"]),
        (["--shutdown-grace", "nan"], 2, ["--shutdown-grace", "not a finite number"]),
        (["--send-timeout", "0"], 2, ["--send-timeout", "above 0"]),
        (["--uvloop", "--backend", "trio"], 2, ["--uvloop", "asyncio only"]),
        (["--no-such-option"], 2, ["unrecognized arguments: --no-such-option"]),
        (["os:path"], 2, ["os:path is a module", "not an App"]),
        (["os:getcwd"], 2, ["os:getcwd() returned a str", "not an App"]),
        (["os:no_such_thing"], 2, ["'os' has no attribute 'no_such_thing'"]),
        (["no_such_module:app"], 2, ["cannot import 'no_such_module'"]),
        (["just_a_module"], 2, ["module:attribute"]),
        # A key no client can present would answer everyone 401: `--api-key "$UNSET"`.
        (["--api-key", ""], 2, ["--api-key", "cannot be empty"]),
        (["--api-key", "k", "--api-key", " k"], 2, ["--api-key", "start or end with a space"]),
        (["--api-key", "cl\u00e9"], 2, ["--api-key", "printable ASCII"]),
    ],
)
def test_bad_option_is_one_line(args: list[str], status: int, needles: list[str]) -> None:
    assert_one_line(run_serve(*args), status, *needles)


def test_a_bad_key_in_the_environment_is_one_line_and_not_echoed() -> None:
    result = run_serve("--port", "0", env={"RAWSSE_API_KEYS": "good,sec\tret"})
    assert_one_line(result, 2, "RAWSSE_API_KEYS", "printable ASCII")
    assert "sec" not in result.stderr


def test_app_whose_import_fails_names_the_error_and_where(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text("import json\n\nraise RuntimeError('no config')\n")
    result = run_serve("broken_app:app", env={"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}"})
    assert_one_line(result, 1, "importing 'broken_app' failed", "RuntimeError: no config", ":3)")


def test_cors_origin_on_a_plain_handler_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "handler_app.py").write_text(
        "from rawsse import Response\nasync def handler(request):\n    return Response('x')\n"
    )
    result = run_serve(
        "handler_app:handler", "--cors-origin", "*", env={"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}"}
    )
    assert_one_line(result, 2, "--cors-origin needs APP to be an App")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_in_use_is_one_line(workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve("--port", str(port), "--workers", workers)
    assert_one_line(result, 1, f"cannot listen on 127.0.0.1:{port}", "address already in use")


def test_workers_do_not_join_another_servers_reuseport_group() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve("--port", str(port), "--workers", "2")
    assert_one_line(result, 1, "address already in use")


def test_host_that_is_not_local_is_one_line() -> None:
    # TEST-NET-1: a valid address no machine here has.
    assert_one_line(run_serve("--host", "192.0.2.1", "--port", "0"), 1, "cannot listen on")


def _blocker(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment in which importing ``module`` fails as if it were not installed."""
    (tmp_path / f"{module}.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"
    )
    return {"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}"}


def test_trio_backend_without_trio_suggests_the_extra(tmp_path: Path) -> None:
    result = run_serve("--backend", "trio", "--port", "0", env=_blocker(tmp_path, "trio"))
    assert_one_line(result, 1, "--backend trio needs trio", "pip install 'rawsse[trio]'")


def test_uvloop_without_uvloop_suggests_the_extra(tmp_path: Path) -> None:
    result = run_serve("--uvloop", "--port", "0", env=_blocker(tmp_path, "uvloop"))
    assert_one_line(result, 1, "--uvloop needs uvloop", "pip install 'rawsse[uvloop]'")


def test_a_worker_that_cannot_start_is_reported_once(tmp_path: Path) -> None:
    result = run_serve("no_such_module:app", "--workers", "3", "--port", "0")
    assert_one_line(result, 2, "cannot import 'no_such_module'")


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    result = subprocess.run(
        [sys.executable, "-m", "rawsse", "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"rawsse {version('rawsse')}"
    import rawsse

    assert rawsse.__version__ == version("rawsse")


@pytest.mark.parametrize("command", ["serve", "bench", "trace"])
def test_every_option_has_help_that_shows_its_default(command: str) -> None:
    from rawsse.cli._main import build_parser

    sub = build_parser(command).commands[command]
    text = sub.format_help()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        name = action.option_strings[-1]
        assert action.help, f"{command} {name} has no help"
        if action.nargs == 0:  # a flag
            continue
        shown = sub._get_formatter()._expand_help(action)
        assert "default" in shown, f"{command} {name}: {shown!r} does not say its default"
        default = action.default
        if default not in (None, [], False, ""):
            spelled = f"{default:g}" if isinstance(default, float) else str(default)
            assert spelled in shown, f"{command} {name}: {shown!r}"
    assert "Traceback" not in text


def test_demo_only_options_warn_once_with_an_app(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(
        "from rawsse import App, Response\n"
        "app = App()\n"
        "@app.get('/hi')\n"
        "async def hi(request):\n"
        "    return Response('hi there')\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}"}
    with serve(
        "myapp:app",
        "--workers",
        "2",
        "--api-key",
        "k",
        "--token-delay",
        "1",
        "--resume-grace",
        "3",
        "--cors-origin",
        "http://example.test",
        env=env,
    ) as (proc, port):
        raw = http_get(port, "/hi", headers="Origin: http://example.test\r\n")
        [response] = parse_responses(raw)
        assert response.body == b"hi there"
        assert ("access-control-allow-origin", "http://example.test") in response.headers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stderr is not None
        err = proc.stderr.read()
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == [
        "rawsse serve: warning: --api-key, --resume-grace, --token-delay configure the built-in "
        "demo app only and are ignored with APP (pass api_keys= and resume_grace_s= to "
        "mount_chat in your app)"
    ], err


def test_demo_app_options_draw_no_warning() -> None:
    with serve("--api-key", "k", "--token-delay", "0") as (proc, _):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stderr is not None
        assert "warning" not in proc.stderr.read()


# --- The supervisor: draining, hung workers, its own death ----------------------------------


def children_of(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    return [int(child) for child in out]


def is_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def open_stream(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = b""
    while b"started" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return sock


def test_supervisor_waits_for_a_worker_that_drains_slowly() -> None:
    # Each worker's streams end one a second once told to: more than the grace (0 s) plus the
    # supervisor's stall bound in all, but always progressing. Nobody is killed.
    from rawsse.cli._workers import STALL_S

    streams = 14
    with serve(
        "tests.tools_support:slow_drain_app",
        "--workers",
        "2",
        "--shutdown-grace",
        "0",
        env={"PYTHONPATH": REPO_ROOT},
    ) as (proc, port):
        held = [open_stream(port, "/drain") for _ in range(streams)]
        try:
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            status = proc.wait(timeout=40)
            elapsed = time.monotonic() - started
        finally:
            for sock in held:
                sock.close()
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert "killed" not in err, err
    assert elapsed > STALL_S, elapsed  # it outlasted the bound: the supervisor waited
    # The streams outlived the grace, so each worker's server cut them, and says so.
    [summary] = [line for line in err.splitlines() if "shutdown cut" in line]
    assert f"shutdown cut {streams} connections (the grace was 0 s)" in summary, err
    assert status == 1
    assert "Traceback" not in err


def test_supervisor_kills_a_hung_worker_counts_and_reports_it(tmp_path: Path) -> None:
    from rawsse.cli._workers import STALL_S

    marker = tmp_path / "hung"
    with serve(
        "tests.tools_support:hang_app",
        "--workers",
        "2",
        "--shutdown-grace",
        "0.5",
        env={"PYTHONPATH": REPO_ROOT, "RAWSSE_TEST_MARKER": str(marker)},
    ) as (proc, port):
        workers = children_of(proc.pid)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
            wait_until(marker.exists, 15, "the handler to block its worker")
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            status = proc.wait(timeout=30)
            elapsed = time.monotonic() - started
        finally:
            sock.close()
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert status == 1, err
    # Its status thread still reports (the process lives), but the count never falls.
    [killed] = [line for line in err.splitlines() if "killed" in line and "closed no" in line]
    assert "holding 1 connection" in killed, err
    assert "shutdown cut 1 connection (the grace was 0.5 s)" in err, err
    assert STALL_S < elapsed < STALL_S + 10, elapsed
    assert all(is_gone(pid) for pid in workers)
    assert "Traceback" not in err


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_supervisor_waits_for_a_worker_whose_loop_is_busy_ending_streams(backend: str) -> None:
    # A worker ending thousands of streams keeps its event loop busy for seconds on end; here
    # one stream's end blocks the loop for longer than the stall bound. Its reports come from a
    # thread, so it is not taken for hung: every stream ends with its farewell, nobody is killed.
    from rawsse.cli._workers import STALL_S
    from tests.tools_support import BLOCKED_END_S

    assert BLOCKED_END_S > STALL_S
    with serve(
        "tests.tools_support:blocking_end_app",
        "--workers",
        "2",
        "--shutdown-grace",
        "30",
        "--backend",
        backend,
        env={"PYTHONPATH": REPO_ROOT},
    ) as (proc, port):
        held = [open_stream(port, "/block") for _ in range(6)]
        try:
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            status = proc.wait(timeout=40)
            elapsed = time.monotonic() - started
            tails = []
            for sock in held:
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
                tails.append(data)
        finally:
            for sock in held:
                sock.close()
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert "killed" not in err, err
    assert elapsed > BLOCKED_END_S, elapsed  # it did block
    assert all(tail.endswith(b"data: bye\n\n\r\n0\r\n\r\n") for tail in tails), tails
    assert status == 0, err


def test_supervisor_kills_a_stopped_worker_as_silent() -> None:
    # A whole process that stops (SIGSTOP here; swapped out, deadlocked) sends no report.
    from rawsse.cli._workers import STALL_S

    with serve("--workers", "2", "--shutdown-grace", "1") as (proc, _port):
        workers = children_of(proc.pid)
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
        elapsed = time.monotonic() - started
        assert proc.stderr is not None
        err = proc.stderr.read()
    killed = [line for line in err.splitlines() if "sent no report" in line]
    assert len(killed) == 2, err  # once each
    assert STALL_S < elapsed < STALL_S + 10, elapsed
    [summary] = [line for line in err.splitlines() if "shutdown cut" in line]
    assert "worker 0 killed" in summary and "worker 1 killed" in summary, err
    assert status == 1
    assert all(is_gone(pid) for pid in workers)


def test_workers_stop_by_themselves_when_the_supervisor_is_killed() -> None:
    with serve("--workers", "2") as (proc, port):
        workers = children_of(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        wait_until(lambda: all(is_gone(pid) for pid in workers), 15, "the orphaned workers to exit")
    with pytest.raises(ConnectionRefusedError):
        http_get(port, "/healthz")


@pytest.mark.anyio
async def test_a_worker_whose_parent_changed_shuts_down_by_itself() -> None:
    # The fallback where no parent-death signal comes: the link sees another parent pid.
    from rawsse.app import App
    from rawsse.cli._supervised import SupervisorLink
    from rawsse.server import Server

    read_end, write_end = os.pipe()
    link = SupervisorLink(supervisor_pid=os.getppid() + 1_000_000, status_fd=write_end)
    server = Server(App(), port=0, access_log=False)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(link.run, server)
            await server.serve()  # returns once the link has shut it down
            tg.cancel_scope.cancel()
    link.finished(server.connections_cut)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        lines = pipe.read().decode().splitlines()
    assert lines[0] == "open 0"
    assert lines[-1] == "cut 0"


@pytest.mark.anyio
async def test_a_worker_whose_status_pipe_broke_shuts_down_by_itself() -> None:
    from rawsse.app import App
    from rawsse.cli._supervised import SupervisorLink
    from rawsse.server import Server

    read_end, write_end = os.pipe()
    os.close(read_end)  # the supervisor is gone: nobody reads
    link = SupervisorLink(supervisor_pid=os.getppid(), status_fd=write_end)
    server = Server(App(), port=0, access_log=False)
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(link.run, server)
                await server.serve()
                tg.cancel_scope.cancel()
    finally:
        os.close(write_end)
    assert link.gone


def test_serve_raises_its_descriptor_limit_and_says_once_when_it_is_full() -> None:
    soft, hard = 48, 96
    proc = subprocess.Popen(
        [sys.executable, "-m", "rawsse", "serve", "--port", "0", "--no-access-log"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(READY_PREFIX), line
        port = int(line.strip().rsplit(":", 1)[1])
        with open(f"/proc/{proc.pid}/limits") as limits:
            [row] = [r for r in limits if r.startswith("Max open files")]
        assert row.split()[3:5] == [str(hard), str(hard)], row  # soft raised to the hard limit
        # Twice as many connections as it may hold: it fills up, the rest wait in the backlog.
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2 * hard)]
        wait_until(
            lambda: len(os.listdir(f"/proc/{proc.pid}/fd")) >= hard - 1, 10, "the server to fill up"
        )
        time.sleep(1.0)  # it retries meanwhile (backing off): still said once
        for sock in held[:-1]:  # room again: the waiting ones are served
            sock.close()
        held = held[-1:]
        held[0].settimeout(10)
        held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
    said = [line for line in err.splitlines() if "out of file descriptors" in line]
    assert len(said) == 1, err
    assert f"this process may open {hard}" in said[0]
    assert "Traceback" not in err


def test_package_declares_its_license_as_spdx_and_ships_it() -> None:
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as file:
        project = tomllib.load(file)["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    with open(os.path.join(REPO_ROOT, "LICENSE")) as file:
        assert file.readline().strip() == "MIT License"
