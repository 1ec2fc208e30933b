"""Latency histograms with bounded memory: log-linear buckets, HdrHistogram style.

Contract: ``Histogram.record(value_us)`` counts one (or ``count``) non-negative integer values
in microseconds; ``percentile(p)`` returns a value within 1/64 (1.6 %) of the true p-th
percentile (exact below 128 us), ``max``/``min``/``mean`` are exact. Memory is one counter per
bucket: 64 buckets per power of two, so about 2,100 counters reach an hour; recording costs one
``bit_length`` and a list increment, whatever the number of values.

Buckets: values below 128 get a bucket each. Above, a value ``v`` with ``s = bit_length(v) - 7``
falls in bucket ``64 * s + (v >> s)``: the top 7 significant bits, so the bucket width is at
most 1/64 of its lower bound.

For people: ``coarse(edges_us)`` regroups the counts under upper bounds (``DISPLAY_EDGES_US``:
1-2-5 steps from 10 us to 1,000 s), each fine bucket counted under the first bound at or above
its lowest value (so within 1/64 of the bound, like the percentiles). For other processes:
``to_json()`` and ``Histogram.from_json`` carry it whole.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DISPLAY_EDGES_US", "Histogram"]

_LINEAR = 128  # values below this have a bucket each
_SUB_BITS = 7  # significant bits kept above the linear range


# Upper bounds in microseconds, 1-2-5 per decade, 10 us to 1,000 s.
DISPLAY_EDGES_US: tuple[int, ...] = (
    *(step * 10**decade for decade in range(1, 9) for step in (1, 2, 5)),
    10**9,
)


def _bucket(value: int) -> int:
    if value < _LINEAR:
        return value
    shift = value.bit_length() - _SUB_BITS
    return (shift << 6) + (value >> shift)


def _bounds(bucket: int) -> tuple[int, int]:
    """The lowest and highest value of ``bucket``."""
    if bucket < _LINEAR:
        return bucket, bucket
    shift = (bucket >> 6) - 1
    low = (bucket - (shift << 6)) << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Counts of microsecond values in log-linear buckets (see the module contract)."""

    __slots__ = ("_counts", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._counts: list[int] = []
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value_us: int, count: int = 1) -> None:
        """Count ``value_us`` (negative values, from clock skew, count as 0) ``count`` times."""
        # ``_bucket`` inlined, and no builtin calls: bench records about five values a stream.
        if value_us < _LINEAR:
            if value_us < 0:
                value_us = 0
            bucket = value_us
        else:
            shift = value_us.bit_length() - _SUB_BITS
            bucket = (shift << 6) + (value_us >> shift)
        counts = self._counts
        if bucket >= len(counts):
            counts.extend([0] * (bucket + 1 - len(counts)))
        counts[bucket] += count
        if value_us > self.max:
            self.max = value_us
        if value_us < self.min or not self.count:
            self.min = value_us
        self.count += count
        self.total += value_us * count

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts to this histogram."""
        if not other.count:
            return
        if len(other._counts) > len(self._counts):
            self._counts.extend([0] * (len(other._counts) - len(self._counts)))
        for bucket, count in enumerate(other._counts):
            self._counts[bucket] += count
        self.min = other.min if not self.count else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    @property
    def mean(self) -> float:
        """The exact mean, or 0 when empty."""
        return self.total / self.count if self.count else 0.0

    def percentile(self, p: float) -> float:
        """The value below or at which ``p`` percent of values fall (0 when empty).

        Within a bucket the midpoint is reported, clamped to the exact min and max.
        """
        if not self.count:
            return 0.0
        rank = max(1, -(-self.count * p // 100))  # ceil(count * p / 100), at least 1
        seen = 0
        for bucket, count in enumerate(self._counts):
            seen += count
            if seen >= rank:
                low, high = _bounds(bucket)
                return float(min(max((low + high) / 2, self.min), self.max))
        return float(self.max)  # pragma: no cover - rank <= count always stops the loop

    def summary_ms(self) -> dict[str, float]:
        """``p50``, ``p90``, ``p99``, ``max`` and ``mean`` in milliseconds, 3 decimals."""
        return {
            "p50": round(self.percentile(50) / 1000, 3),
            "p90": round(self.percentile(90) / 1000, 3),
            "p99": round(self.percentile(99) / 1000, 3),
            "max": round(self.max / 1000, 3),
            "mean": round(self.mean / 1000, 3),
        }

    def buckets(self) -> list[tuple[int, int, int]]:
        """Every non-empty bucket as ``(lowest value, highest value, count)``, in order."""
        return [(*_bounds(bucket), count) for bucket, count in enumerate(self._counts) if count]

    def coarse(self, edges_us: tuple[int, ...] = DISPLAY_EDGES_US) -> list[tuple[int, int]]:
        """``(upper bound, count)`` per bound of ``edges_us`` (ascending), from the first
        non-empty one to the last; values above the last bound count under it."""
        counts = [0] * len(edges_us)
        index = 0
        for low, _, count in self.buckets():
            while index < len(edges_us) - 1 and low > edges_us[index]:
                index += 1
            counts[index] += count
        used = [i for i, count in enumerate(counts) if count]
        if not used:
            return []
        return [(edges_us[i], counts[i]) for i in range(used[0], used[-1] + 1)]

    def to_json(self) -> dict[str, object]:
        """Everything, as JSON-ready values (``from_json`` reads it back)."""
        return {
            "counts": self._counts,
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        """The histogram ``to_json`` described."""
        histogram = cls()
        histogram._counts = [int(n) for n in data["counts"]]
        histogram.count = int(data["count"])
        histogram.total = int(data["total"])
        histogram.min = int(data["min"])
        histogram.max = int(data["max"])
        return histogram
