"""Each example in examples/ runs as documented: `rawsse serve examples.NAME:app`, real clients."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from httpx_sse import connect_sse

ROOT = pathlib.Path(__file__).resolve().parent.parent


@contextmanager
def serve(app_path: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rawsse", "serve", app_path, "--port", "0", "--no-access-log"],
        cwd=ROOT,
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
            with httpx.Client(timeout=10) as client, connect_sse(client, "GET", f"{url}/ticker") as source:
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
