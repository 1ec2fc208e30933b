"""Each example in examples/ runs as documented: `rawsse serve examples.NAME:app`, real clients.

Also the README's code: its model module served as written, its OpenAI snippet run as written.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx
import pytest
from httpx_sse import connect_sse

from tests.tools_support import closed_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
BACKENDS = ["asyncio", "trio"]


@contextmanager
def serve(
    app_path: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: pathlib.Path = ROOT,
) -> Iterator[str]:
    """``rawsse serve APP ARGS`` in a subprocess (``env`` added to this one's); yields its URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "rawsse", "serve", app_path, "--port", "0", "--no-access-log", *args),
        ],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("rawsse listening on "), (line, proc.stderr and proc.stderr.read())
        yield line.split()[-1]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_minimal_stream() -> None:
    with serve("examples.minimal_stream:app") as url, httpx.Client(timeout=10) as client:
        with connect_sse(client, "GET", f"{url}/clock?interval=0.01&count=3") as source:
            everything = list(source.iter_sse())
    # httpx-sse reports the retry-only frame as an event; WHATWG dispatches none for it.
    assert everything[0].retry == 2000
    events = [e for e in everything if e.data]
    assert [e.event for e in events] == ["tick"] * 3
    assert [e.id for e in events] == ["0", "1", "2"]
    assert [e.json()["n"] for e in events] == [0, 1, 2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_minimal_stream_answers_bad_input_with_400(backend: str) -> None:
    with serve("examples.minimal_stream:app", "--backend", backend) as url:
        answers = [
            httpx.get(f"{url}/clock?{query}", timeout=10)
            for query in ("interval=abc", "count=ten", "interval=nan", "interval=-1", "count=-2")
        ]
        good = httpx.get(f"{url}/clock?interval=0&count=1", timeout=10)
    assert [answer.status_code for answer in answers] == [400] * 5
    assert answers[0].text == "interval must be a number of seconds and count an integer\n"
    assert answers[2].text == "interval must be between 0 and 3600 seconds, count at least 0\n"
    assert good.status_code == 200


def test_custom_model_with_the_openai_sdk() -> None:
    openai = pytest.importorskip("openai")
    with serve("examples.custom_model:app") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-local", max_retries=0)
        chunks = list(
            client.chat.completions.create(
                model="shout",
                stream=True,
                stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "make some noise"}],
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "MAKE SOME NOISE "
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 3
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()


def test_broadcast_ticker_reaches_every_subscriber() -> None:
    with serve("examples.broadcast_ticker:app") as url:
        received: dict[int, list[str]] = {0: [], 1: []}
        ready = threading.Barrier(3, timeout=10)

        def subscriber(index: int) -> None:
            with (
                httpx.Client(timeout=10) as client,
                connect_sse(client, "GET", f"{url}/ticker") as source,
            ):
                ready.wait()
                for event in source.iter_sse():
                    received[index].append(event.data)
                    if len(received[index]) == 2:
                        return

        threads = [threading.Thread(target=subscriber, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        ready.wait()
        with httpx.Client(timeout=10) as client:
            deadline_tries = 50
            # Subscribers register when their stream starts; publish until both are in.
            for _ in range(deadline_tries):
                reply = client.post(f"{url}/ticker", content=b"probe")
                if reply.text.startswith("sent to 2"):
                    break
            client.post(f"{url}/ticker", content=b"ACME 12.5")
        for thread in threads:
            thread.join(timeout=10)
        for index in (0, 1):
            assert received[index][-1] == "ACME 12.5"


@pytest.mark.parametrize("backend", BACKENDS)
def test_broadcast_ticker_refuses_a_body_that_is_not_utf8(backend: str) -> None:
    with serve("examples.broadcast_ticker:app", "--backend", backend) as url:
        refused = httpx.post(f"{url}/ticker", content=b"ACME \xff\xfe", timeout=10)
        accepted = httpx.post(f"{url}/ticker", content="ACME 12.5 €".encode(), timeout=10)
    assert (refused.status_code, refused.text) == (400, "the body must be UTF-8 text\n")
    assert (accepted.status_code, accepted.text) == (200, "sent to 0 subscribers\n")


@pytest.mark.parametrize("backend", BACKENDS)
def test_chat_proxy_answers_an_unreachable_upstream_with_502_the_sdk_reads(backend: str) -> None:
    openai = pytest.importorskip("openai")
    upstream = f"http://127.0.0.1:{closed_port()}"
    env = {"RAWSSE_UPSTREAM": upstream}
    with serve("examples.chat_proxy:app", "--backend", backend, env=env) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        messages = [{"role": "user", "content": "x"}]
        errors = []
        for stream in (True, False):
            with pytest.raises(openai.InternalServerError) as raised:
                client.chat.completions.create(model="echo", stream=stream, messages=messages)
            errors.append(raised.value)
    for error in errors:
        assert error.status_code == 502
        assert error.code == "upstream_unreachable"
        assert f"The upstream {upstream} could not be reached: cannot connect" in error.message


def _readme_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", readme, re.DOTALL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_readme_model_and_openai_snippet_as_written(backend: str, tmp_path: pathlib.Path) -> None:
    pytest.importorskip("openai")
    model, snippet = _readme_blocks()[:2]
    assert "rawsse serve mymodel:app" in model
    (tmp_path / "mymodel.py").write_text(model)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    with serve("mymodel:app", "--backend", backend, env=env, cwd=tmp_path) as url:
        port = url.rsplit(":", 1)[1]
        assert "http://127.0.0.1:8000/v1" in snippet
        run = subprocess.run(
            [sys.executable, "-c", snippet.replace(":8000/", f":{port}/")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "HI THERE "


def test_chat_proxy_streams_and_forwards_errors_and_cancels_upstream() -> None:
    import os
    import socket
    import time

    openai = pytest.importorskip("openai")
    with serve_demo() as upstream_url:
        os.environ["RAWSSE_UPSTREAM"] = upstream_url
        try:
            with serve("examples.chat_proxy:app") as url:
                client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
                chunks = list(
                    client.chat.completions.create(
                        model="echo",
                        stream=True,
                        messages=[{"role": "user", "content": "via proxy"}],
                    )
                )
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                assert text == "via proxy"
                whole = client.chat.completions.create(
                    model="echo", messages=[{"role": "user", "content": "whole"}]
                )
                assert whole.choices[0].message.content == "whole"
                with pytest.raises(openai.NotFoundError):
                    client.chat.completions.create(
                        model="nope", stream=True, messages=[{"role": "user", "content": "x"}]
                    )
                # A client that leaves mid-stream: the upstream sees its client leave too.
                before = _metric(upstream_url, "rawsse_client_disconnects_total")
                body = (
                    b'{"model":"lorem","max_tokens":2000,"stream":true,'
                    b'"messages":[{"role":"user","content":"x"}],"rawsse":{"token_delay_s":0.01}}'
                )
                host, port = url.removeprefix("http://").split(":")
                with socket.create_connection((host, int(port)), timeout=5) as sock:
                    sock.sendall(
                        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
                        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                        % (len(body), body)
                    )
                    sock.recv(65536)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    if _metric(upstream_url, "rawsse_client_disconnects_total") > before:
                        break
                    time.sleep(0.05)
                assert _metric(upstream_url, "rawsse_client_disconnects_total") > before
        finally:
            os.environ.pop("RAWSSE_UPSTREAM", None)


@contextmanager
def serve_demo() -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rawsse",
            "serve",
            "--port",
            "0",
            "--no-access-log",
            "--token-delay",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("rawsse listening on "), line
        yield line.split()[-1]
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
