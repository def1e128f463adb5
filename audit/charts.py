"""Charts for the HTML report as inline SVG, rendered here (no script, no font, no request).

Each chart is one ``<svg>`` element; bars are drawn as one ``<path>`` (a subpath per bar)
rather than an element per bar, which keeps a 1,000-cluster chart a few kilobytes. Colours
come from CSS classes in the report's stylesheet. Every text that ends up in the SVG goes
through ``html.escape``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _svg(width: int, height: int, body: str, label: str, cls: str = "chart") -> Markup:
    return Markup(
        f'<svg class="{cls}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>{body}</svg>'
    )


def bars(
    values: Sequence[float],
    *,
    width: int = 760,
    height: int = 180,
    label: str,
    y_label: str = "",
) -> Markup:
    """A bar chart of ``values`` in the given order, with the largest value on the y axis."""
    left, bottom, top = 48, 18, 8
    plot_w, plot_h = width - left - 4, height - bottom - top
    n = len(values)
    hi = max(values, default=0) or 1
    step = plot_w / max(n, 1)
    gap = step * 0.15 if step > 3 else 0
    parts = []
    for i, v in enumerate(values):
        h = plot_h * v / hi
        if h <= 0:
            continue
        x = left + i * step
        parts.append(
            f"M{_num(x)} {_num(top + plot_h)}h{_num(step - gap)}v{_num(-h)}h{_num(gap - step)}z"
        )
    axis = (
        f'<path class="axis" d="M{left} {top}V{top + plot_h}H{width - 4}"/>'
        f'<text class="tick" x="{left - 4}" y="{top + 8}" text-anchor="end">{_short(hi)}</text>'
        f'<text class="tick" x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>'
        f'<text class="tick" x="{left}" y="{height - 4}">{escape(y_label)}</text>'
    )
    return _svg(width, height, f'<path class="bar" d="{"".join(parts)}"/>{axis}', label)


def spark(counts: Sequence[int], *, width: int = 120, height: int = 22, label: str) -> Markup:
    """A small histogram (the distance distribution of one cluster)."""
    hi = max(counts, default=0)
    if not counts or hi == 0:
        return _svg(width, height, "", label, "spark")
    step = width / len(counts)
    parts = []
    for i, c in enumerate(counts):
        if c:
            h = max(1.0, (height - 1) * c / hi)
            parts.append(f"M{_num(i * step)} {height}h{_num(step)}v{_num(-h)}h{_num(-step)}z")
    return _svg(width, height, f'<path class="bar" d="{"".join(parts)}"/>', label, "spark")


def heatmap(
    table: Sequence[Sequence[int]],
    rows: Sequence[str],
    cols: Sequence[str],
    *,
    label: str,
    cell: int = 16,
) -> Markup:
    """A heatmap of a contingency table: cell darkness is the cell's share of its row."""
    left, top = 56, 44
    width = left + cell * len(cols) + 8
    height = top + cell * len(rows) + 8
    parts = []
    for i, row in enumerate(table):
        total = sum(row) or 1
        for j, value in enumerate(row):
            if value:
                share = value / total
                parts.append(
                    f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell - 1}" '
                    f'height="{cell - 1}" fill-opacity="{max(0.06, share):.2f}">'
                    f"<title>A {escape(rows[i])} / B {escape(cols[j])}: {value}</title></rect>"
                )
    ticks = [
        f'<text class="tick" x="{left - 4}" y="{top + i * cell + cell - 4}" '
        f'text-anchor="end">{escape(r)}</text>'
        for i, r in enumerate(rows)
    ]
    ticks += [
        f'<text class="tick" x="{left + j * cell + cell / 2}" y="{top - 4}" text-anchor="start" '
        f'transform="rotate(-60 {left + j * cell + cell / 2} {top - 4})">{escape(c)}</text>'
        for j, c in enumerate(cols)
    ]
    body = f'<g class="cells">{"".join(parts)}</g>{"".join(ticks)}'
    return _svg(width, height, body, label, "heatmap")


def _short(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e4:
        return f"{value / 1e3:.3g}k"
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"
