"""``rawsse bench --plot FILE.png``: the distributions as a picture, with matplotlib.

Contract: ``check_plotting()`` raises ``CommandError`` (exit status 1) before a run when
matplotlib is not installed, naming the extra that brings it (``rawsse[bench]``).
``plot(result, path)`` draws the time to the first event and the gaps between events of a
``result_json`` dict as two histograms over the same logarithmic axis (its bucket bounds, in
milliseconds), titled with the run's URL, streams and percentiles, and writes ``path`` (the
format from its suffix; PNG by default). matplotlib is imported here only, never by a run
without ``--plot``.
"""

from __future__ import annotations

import math
from typing import Any

from rawsse.cli._errors import RUNTIME, CommandError

__all__ = ["check_plotting", "plot"]

_PANELS = (("first_event_ms", "time to first event"), ("gap_ms", "gap between events"))


def _lower(bound: float) -> float:
    """The bound below ``bound`` in the 1-2-5 steps: a bucket spans from it to ``bound``."""
    lead = round(bound / 10 ** math.floor(math.log10(bound) + 1e-9))
    return bound / (2.5 if lead == 5 else 2)


def check_plotting() -> None:
    """Raise ``CommandError`` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            RUNTIME,
            f"--plot needs matplotlib, which is not installed here ({exc}): "
            "pip install 'rawsse[bench]'",
        ) from exc


def plot(result: dict[str, Any], path: str) -> None:
    """Write the two histograms of ``result`` to ``path`` (see the module contract)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for axis, (key, title) in zip(axes, _PANELS, strict=True):
        buckets = result["histograms"][key]
        summary = result[key]
        if buckets:
            bounds = [b["le"] for b in buckets]
            lows = [_lower(bound) for bound in bounds]
            axis.bar(
                lows,
                [b["count"] for b in buckets],
                width=[high - low for low, high in zip(lows, bounds, strict=True)],
                align="edge",
                edgecolor="black",
                linewidth=0.5,
            )
        axis.set_xscale("log")
        axis.set_xlabel("milliseconds")
        axis.set_ylabel("count")
        axis.set_title(
            f"{title}\np50 {summary['p50']:g}  p90 {summary['p90']:g}  p99 {summary['p99']:g} ms"
            f"  ({summary['count']:,})",
            fontsize=10,
        )
    streams = result["streams"]
    figure.suptitle(
        f"rawsse bench {result['url']} ({streams:,} stream{'' if streams == 1 else 's'}, "
        f"{result['completed']:,} completed, {result['duration_s']:g} s)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
