"""A benchmark's configuration and results as JSON, between load processes, and merged.

Contract: ``config_to_json`` / ``config_from_json`` carry a ``BenchConfig`` to a load process
(the request body as Latin-1 text, so any bytes survive); ``state_to_json`` /
``state_from_json`` carry its ``BenchState`` back, histograms whole; ``progress_to_json`` is the
small part of a state a progress line needs. ``merge_states(states)`` adds several processes'
results into one: counts and histograms added, the run spanning the earliest start to the
latest end, CPU time summed, connections per second over the span of all the opens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rawsse.bench._run import BenchConfig, BenchState
from rawsse.bench._stats import Histogram
from rawsse.client._exchange import Target

__all__ = [
    "config_from_json",
    "config_to_json",
    "merge_states",
    "progress_to_json",
    "state_from_json",
    "state_to_json",
]

_COUNTERS = (
    "started",
    "completed",
    "cancelled",
    "retries",
    "active",
    "peak_active",
    "events",
    "comments",
    "bytes",
    "payload_bytes",
    "connections",
)
_TIMES = ("t_start", "t_end", "cpu_start", "cpu_end", "t_first_connect", "t_last_connect")
_HISTOGRAMS = tuple(f.name for f in dataclasses.fields(BenchState) if f.name.endswith("_us"))


def config_to_json(config: BenchConfig) -> dict[str, Any]:
    """``config`` as JSON-ready values."""
    data = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    data["target"] = config.target.url()
    data["headers"] = [list(pair) for pair in config.headers]
    data["body"] = None if config.body is None else config.body.decode("latin-1")
    return data


def config_from_json(data: dict[str, Any]) -> BenchConfig:
    """The ``BenchConfig`` ``config_to_json`` described."""
    values = dict(data)
    values["target"] = Target.from_url(data["target"])
    values["headers"] = tuple((name, value) for name, value in data["headers"])
    values["body"] = None if data["body"] is None else data["body"].encode("latin-1")
    return BenchConfig(**values)


def progress_to_json(state: BenchState) -> dict[str, Any]:
    """The counters of a run in progress (what a progress line shows)."""
    data: dict[str, Any] = {name: getattr(state, name) for name in _COUNTERS}
    data["errors"] = dict(state.errors)
    data["t_start"] = state.t_start
    return data


def state_to_json(state: BenchState) -> dict[str, Any]:
    """All of ``state``, as JSON-ready values."""
    data = progress_to_json(state)
    data.update({name: getattr(state, name) for name in _TIMES})
    data["error_samples"] = dict(state.error_samples)
    data["statuses"] = {str(status): count for status, count in state.statuses.items()}
    for name in _HISTOGRAMS:
        data[name] = getattr(state, name).to_json()
    return data


def state_from_json(data: dict[str, Any]) -> BenchState:
    """The ``BenchState`` ``state_to_json`` (or, without results, ``progress_to_json``)
    described."""
    state = BenchState()
    for name in (*_COUNTERS, *_TIMES):
        if name in data:
            setattr(state, name, data[name])
    state.errors.update(data["errors"])
    state.error_samples.update(data.get("error_samples", {}))
    state.statuses = {int(status): count for status, count in data.get("statuses", {}).items()}
    for name in _HISTOGRAMS:
        if name in data:
            setattr(state, name, Histogram.from_json(data[name]))
    return state


def merge_states(states: list[BenchState]) -> BenchState:
    """One state adding up ``states`` (see the module contract)."""
    merged = BenchState()
    for state in states:
        for name in _COUNTERS:
            setattr(merged, name, getattr(merged, name) + getattr(state, name))
        for kind, count in state.errors.items():
            merged.errors[kind] = merged.errors.get(kind, 0) + count
        for kind, sample in state.error_samples.items():
            merged.error_samples.setdefault(kind, sample)
        for status, count in state.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
        for name in _HISTOGRAMS:
            getattr(merged, name).merge(getattr(state, name))
    started = [s.t_start for s in states if s.t_start]
    merged.t_start = min(started, default=0.0)
    merged.t_end = max((s.t_end for s in states), default=0.0)
    # The CPU time of all the processes together: an end with a start of 0.
    merged.cpu_start, merged.cpu_end = 0.0, sum(s.cpu_s for s in states)
    opened = [s for s in states if s.connections]
    merged.t_first_connect = min((s.t_first_connect for s in opened), default=0.0)
    merged.t_last_connect = max((s.t_last_connect for s in opened), default=0.0)
    return merged
