"""The layer rules of ARCHITECTURE.md, checked on what each module loads, transitively.

Every module of the package is imported in a fresh interpreter (a fork of one that has imported
nothing of rawsse), and the modules it pulled in are checked against the rules below. A direct
``import`` is not enough to check: ``rawsse.parser`` once loaded anyio through the package's
``__init__``, and the demo models loaded the runtime through a helper.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rawsse"

# Layers, lowest first. A module may load rawsse modules of its own layer or lower ones only.
# The first matching prefix decides (so the chat layer's I/O glue precedes the chat prefix).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaf", ("rawsse._errors", "rawsse._counters", "rawsse._lazy")),
    # The version comes from the package metadata, whose reader loads socket: not sans-io.
    ("version", ("rawsse._version",)),
    ("wire", ("rawsse.sse", "rawsse.parser", "rawsse.jsonio")),
    ("runtime", ("rawsse._runtime",)),
    ("http", ("rawsse._http", "rawsse.request", "rawsse.response")),
    ("streams", ("rawsse.stream", "rawsse.broadcast", "rawsse.replay", "rawsse.redis")),
    ("app", ("rawsse.app", "rawsse.server", "rawsse.metrics")),
    ("chat-pure", ("rawsse.chat",)),
    ("chat", ("rawsse.chat.mount", "rawsse.chat.demo")),
    ("client", ("rawsse.client",)),
    ("tools", ("rawsse.bench", "rawsse.trace", "rawsse.cli", "rawsse.lab", "rawsse.__main__")),
]
LAYER_ORDER = {name: rank for rank, (name, _) in enumerate(LAYERS)}
# Third-party or stdlib modules that mean I/O: a pure layer must not load them.
IO_MODULES = ("anyio", "h11", "socket", "trio", "selectors", "asyncio")
PURE_LAYERS = {"leaf", "wire", "chat-pure"}
# The Redis client is imported when a Redis URL is used (a bus connects), never at import.
LAZY_MODULES = ("coredis",)
# The client is a tool that servers never need: it may use the wire core and the leaves only.
CLIENT_MAY_LOAD = {"leaf", "wire", "client"}


def layer_of(module: str) -> str | None:
    """The layer of a rawsse module (the longest matching prefix wins), or None for the root."""
    best: tuple[int, str] | None = None
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), name)
    return None if best is None else best[1]


def violations(module: str, loaded: set[str]) -> list[str]:
    """What ``module`` loading ``loaded`` breaks of the layer rules (empty when it keeps them)."""
    layer = layer_of(module)
    if layer is None:  # the package root: lazy, it must load nothing but its loader
        extra = {m for m in loaded if m.startswith("rawsse.")} - {"rawsse._lazy"}
        return [f"`import rawsse` loads {sorted(extra)}"] if extra else []
    found = []
    for other in sorted(loaded):
        if other == module or not other.startswith("rawsse."):
            continue
        other_layer = layer_of(other)
        if other_layer is None:
            continue
        if layer in PURE_LAYERS and other_layer not in PURE_LAYERS:
            found.append(f"{module} ({layer}) is sans-io but loads {other} ({other_layer})")
        elif layer == "client":
            if other_layer not in CLIENT_MAY_LOAD:
                found.append(f"{module} (client) loads {other} ({other_layer})")
        elif other_layer == "client" and layer != "tools":
            found.append(f"{module} ({layer}) loads the client {other}")
        elif LAYER_ORDER[other_layer] > LAYER_ORDER[layer]:
            found.append(f"{module} ({layer}) loads {other} ({other_layer}), a higher layer")
    if layer in PURE_LAYERS:
        found += [
            f"{module} ({layer}) is sans-io but loads {io}" for io in IO_MODULES if io in loaded
        ]
    if layer == "streams" and ("h11" in loaded or "rawsse._http.connection" in loaded):
        found.append(f"{module} (streams) loads the HTTP driver")
    found += [f"{module} loads {lazy} at import" for lazy in LAZY_MODULES if lazy in loaded]
    return found


def all_modules() -> list[str]:
    """Every module of the package, by walking its files."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


# Runs in a fresh interpreter: fork once per module, import it, report what got loaded.
_PROBE = r"""
import json, os, sys
results = {}
for name in sys.argv[1:]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            __import__(name)
            out = json.dumps(sorted(sys.modules))
        except BaseException as exc:
            out = json.dumps({"error": repr(exc)})
        os.write(write_end, out.encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    results[name] = json.loads(b"".join(chunks))
print(json.dumps(results))
"""


@dataclass(frozen=True)
class Loaded:
    """What each module loads, measured once per test session."""

    by_module: dict[str, list[str] | dict[str, str]]


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    # ``python -m rawsse`` runs the command line when imported: its imports are cli's.
    modules = [m for m in all_modules() if m != "rawsse.__main__"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        capture_output=True,
        check=False,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return Loaded(json.loads(out.stdout))


def test_every_module_is_in_a_layer() -> None:
    unplaced = [m for m in all_modules() if m != "rawsse" and layer_of(m) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_every_module_keeps_the_layer_rules(loaded: Loaded) -> None:
    broken = []
    for module, result in loaded.by_module.items():
        if isinstance(result, dict):
            broken.append(f"{module} failed to import: {result['error']}")
            continue
        broken += violations(module, set(result))
    assert not broken, "\n".join(broken)


def test_importing_rawsse_loads_nothing_else(loaded: Loaded) -> None:
    result = loaded.by_module["rawsse"]
    assert isinstance(result, list)
    assert not {"anyio", "h11", "orjson", "rawsse.client", "rawsse.server"} & set(result)


# The checker itself: it must catch the wrong-way imports the rules exist for.
@pytest.mark.parametrize(
    ("module", "loaded_modules", "expected"),
    [
        ("rawsse.stream", {"rawsse._http.connection", "h11"}, "loads the HTTP driver"),
        ("rawsse.parser", {"anyio"}, "sans-io but loads anyio"),
        ("rawsse.chat.openai_dialect", {"rawsse.stream"}, "sans-io but loads rawsse.stream"),
        ("rawsse.stream", {"rawsse.app"}, "a higher layer"),
        ("rawsse.server", {"rawsse.bench._run"}, "a higher layer"),
        ("rawsse.app", {"rawsse.client._exchange"}, "loads the client"),
        ("rawsse.client._body", {"rawsse._http.body"}, "(client) loads"),
        ("rawsse", {"rawsse.app"}, "`import rawsse` loads"),
        ("rawsse.redis._store", {"coredis"}, "loads coredis at import"),
        ("rawsse.redis", {"rawsse.chat.mount"}, "a higher layer"),
    ],
)
def test_checker_catches_wrong_way_imports(
    module: str, loaded_modules: set[str], expected: str
) -> None:
    found = violations(module, loaded_modules)
    assert any(expected in line for line in found), found


def test_checker_accepts_downward_imports() -> None:
    assert violations("rawsse.chat.mount", {"rawsse.stream", "rawsse.chat.dialect", "anyio"}) == []
    assert violations("rawsse.bench._run", {"rawsse.client._exchange", "rawsse.parser"}) == []
