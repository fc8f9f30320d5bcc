"""Charts drawn on the server as SVG: no JavaScript, no third-party request, readable as the
table printed beside each one. Colours come from presentation attributes, not inline styles,
so the strict CSP stays as it is."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from markupsafe import Markup, escape

ACCENT = "#a3123a"  # the site's one accent colour (static/css/site.css)
AXIS = "#6b6b6b"
INK = "#222"


def _number(value: int) -> str:
    return f"{value:,}"


def horizontal_bars(rows: Sequence[tuple[str, int]], title: str, width: int = 560) -> Markup:
    """One bar per row (label, value), longest first as given; the label and value as text."""
    if not rows:
        return Markup("")
    bar_height, gap, label_width, value_width = 18, 6, 150, 80
    height = len(rows) * (bar_height + gap) + gap
    peak = max(value for _, value in rows) or 1
    room = width - label_width - value_width
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-labelledby="chart-{zlib.crc32(title.encode())}">'
        f'<title id="chart-{zlib.crc32(title.encode())}">{escape(title)}</title>'
    ]
    for index, (label, value) in enumerate(rows):
        y = gap + index * (bar_height + gap)
        length = max(1, round(room * value / peak)) if value else 0
        parts.append(
            f'<text x="{label_width - 6}" y="{y + 13}" text-anchor="end" font-size="12" fill="{INK}">'
            f"{escape(label[:24])}</text>"
            f'<rect x="{label_width}" y="{y}" width="{length}" height="{bar_height}" '
            f'fill="{ACCENT}" rx="2"/>'
            f'<text x="{label_width + length + 6}" y="{y + 13}" font-size="12" fill="{INK}">'
            f"{_number(value)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()


def columns(series: Sequence[tuple[str, int]], title: str, width: int = 640, height: int = 180) -> Markup:
    """A column per bucket of a time series, with the peak and the first and last labels."""
    if not series:
        return Markup("")
    top, bottom, left = 16, 22, 48
    plot_height = height - top - bottom
    plot_width = width - left - 4
    peak = max(value for _, value in series) or 1
    step = plot_width / len(series)
    chart_id = f"chart-{zlib.crc32(title.encode())}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-labelledby="{chart_id}">'
        f'<title id="{chart_id}">{escape(title)}</title>',
        f'<line x1="{left}" y1="{top + plot_height}" x2="{width - 4}" y2="{top + plot_height}" '
        f'stroke="{AXIS}"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11" fill="{AXIS}">'
        f"{_number(peak)}</text>",
        f'<text x="{left - 6}" y="{top + plot_height}" text-anchor="end" font-size="11" '
        f'fill="{AXIS}">0</text>',
    ]
    for index, (label, value) in enumerate(series):
        bar = plot_height * value / peak
        x = left + index * step + 1
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_height - bar:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{bar:.1f}" fill="{ACCENT}"><title>{escape(label)}: {_number(value)}</title></rect>'
        )
    parts.append(
        f'<text x="{left}" y="{height - 6}" font-size="11" fill="{AXIS}">{escape(series[0][0])}</text>'
    )
    parts.append(
        f'<text x="{width - 4}" y="{height - 6}" text-anchor="end" font-size="11" fill="{AXIS}">'
        f"{escape(series[-1][0])}</text>"
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()
