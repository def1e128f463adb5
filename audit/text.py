"""Plain-text renderings for the terminal: times, durations, a cluster-size histogram."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise

from clusterstore.eventstore.vocabulary import median

BAR_WIDTH = 24
MAX_BINS = 8


def format_time(value: datetime | None) -> str:
    """UTC, to the second: ``2026-01-02 13:04:05``."""
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def size_histogram(sizes: Sequence[int]) -> list[str]:
    """How many clusters have how many members: a summary line and a few bars. Bins are
    linear while the sizes are of one magnitude, logarithmic when they spread wider.

    cluster sizes: 8 clusters, min 98, median 125, max 160
       98-106  ########                  2
      ...
    """
    if not sizes:
        return ["cluster sizes: no clusters"]
    ordered = sorted(sizes)
    n = len(ordered)
    empty = sum(1 for s in ordered if s == 0)
    head = (
        f"cluster sizes: {n} cluster{'s' if n != 1 else ''}, min {ordered[0]}, "
        f"median {format_size(median(ordered))}, max {ordered[-1]}"
        + (f" ({empty} empty)" if empty else "")
    )
    edges = _edges(ordered[0], ordered[-1], next((s for s in ordered if s > 0), 1))
    counts = [bisect_left(ordered, b) - bisect_left(ordered, a) for a, b in pairwise(edges)]
    labels = [_range(a, b - 1) for a, b in pairwise(edges)]
    label_width = max(len(x) for x in labels)
    count_width = len(str(max(counts)))
    top = max(counts)
    lines = [head]
    for label, count in zip(labels, counts, strict=True):
        bar = "#" * (max(1, round(count / top * BAR_WIDTH)) if count else 0)
        bar = bar.ljust(BAR_WIDTH)
        lines.append(f"  {label.rjust(label_width)}  {bar}  {count:>{count_width}}")
    return lines


def _edges(lo: int, hi: int, positive: int) -> list[int]:
    """Bin edges: bin i holds sizes in [edges[i], edges[i + 1]); ``positive`` is the
    smallest non-zero size (empty clusters get a bin of their own)."""
    if hi - lo < MAX_BINS:
        return list(range(lo, hi + 2))
    if lo >= 1 and hi <= 4 * lo:
        step = -(-(hi - lo + 1) // MAX_BINS)
        return [*range(lo, hi + 1, step), hi + 1]
    start = positive
    ratio = (hi + 1) / start
    inner = sorted({round(start * ratio ** (i / MAX_BINS)) for i in range(MAX_BINS + 1)})
    if lo == 0:
        return [0, *inner] if start == 1 else [0, 1, *inner]
    return inner


def _range(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def format_size(value: float | None, *, grouping: bool = False) -> str:
    """A cluster size or the median of sizes: ``1234`` (``1,234`` with grouping) or
    ``179.5``."""
    if value is None:
        return "-"
    sep = "," if grouping else ""
    return f"{int(value):{sep}}" if float(value).is_integer() else f"{value:{sep}.1f}"
