"""Transfer rates per site link over the last minutes, as an SVG line plot with its legend."""

from __future__ import annotations

from collections.abc import Sequence

from xwch.dashboard.escaping import text
from xwch.dashboard.traffic import LinkRates

WIDTH = 720
HEIGHT = 220
MARGIN_LEFT = 70
MARGIN_BOTTOM = 24
# Lines get classes c0..c7 (colors in dashboard.css), cycled beyond.
PALETTE = 8


def human_rate(rate: float) -> str:
    for unit, size in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if rate >= size:
            return f"{rate / size:.1f} {unit}"
    return f"{rate:.0f} B/s"


def draw_rates(rates: Sequence[LinkRates], bucket: float) -> str:
    """The plot of every link's upload and download rates, then a legend naming them."""
    series = [
        (f"{r.link} {direction}", values)
        for r in rates
        for direction, values in (("upload", r.upload), ("download", r.download))
        if any(values)
    ]
    if not series:
        return '<p class="empty">No transfers reported in the last minutes.</p>'
    points = max(len(values) for _, values in series)
    top = max(max(values) for _, values in series) or 1.0
    plot_w, plot_h = WIDTH - MARGIN_LEFT - 8, HEIGHT - MARGIN_BOTTOM - 8
    step = plot_w / max(points - 1, 1)
    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img">',
        f'<line class="axis" x1="{MARGIN_LEFT}" y1="8" x2="{MARGIN_LEFT}" y2="{8 + plot_h}"/>',
        f'<line class="axis" x1="{MARGIN_LEFT}" y1="{8 + plot_h}" x2="{WIDTH - 8}" '
        f'y2="{8 + plot_h}"/>',
        f'<text x="4" y="16">{text(human_rate(top))}</text>',
        f'<text x="4" y="{8 + plot_h}">0</text>',
        f'<text x="{MARGIN_LEFT}" y="{HEIGHT - 6}">-{(points - 1) * bucket / 60:.0f} min</text>',
        f'<text x="{WIDTH - 40}" y="{HEIGHT - 6}">now</text>',
    ]
    legend = ['<ul class="legend">']
    for i, (name, values) in enumerate(series):
        offset = points - len(values)
        coords = " ".join(
            f"{MARGIN_LEFT + (offset + k) * step:.1f},{8 + plot_h - v / top * plot_h:.1f}"
            for k, v in enumerate(values)
        )
        parts.append(
            f'<polyline class="c{i % PALETTE}" points="{coords}"><title>{text(name)}'
            f"</title></polyline>"
        )
        legend.append(
            f'<li><span class="swatch c{i % PALETTE}"></span>{text(name)}: '
            f"{text(human_rate(values[-1]))} now, {text(human_rate(max(values)))} at most</li>"
        )
    parts.append("</svg>")
    legend.append("</ul>")
    return "".join(parts) + "".join(legend)
