"""Bar charts as inline SVG: pure functions from numbers to an SVG string.

The run report (`codemill.report.html`) embeds these in a static page, so they need no
script and no plotting library. Every value is one mark, `<rect class="bar">`, carrying
`data-series`, `data-label` and `data-value` (what the tests and a curious reader check)
and a `<title>` that browsers show as a tooltip. Quantities are either counts (integer
ticks, thousands separators) or shares in [0, 1] (percent ticks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# Colour-blind-safe hues (Okabe and Ito's palette), in the order series take them.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")

WIDTH = 600
HEIGHT = 320
TITLE_BAND = 28  # room above the plot for the title
LEGEND_BAND = 22  # and for the legend, when there are several series
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_BOTTOM = 72, 16, 52
LABEL_CHAR_WIDTH = 6.5  # pixels per character of an 11px tick label, roughly
LABEL_COLUMN = 230  # horizontal charts: width of the label column
ROW_HEIGHT = 22  # horizontal charts: height per bar


@dataclass(frozen=True)
class Series:
    """One named list of values, one per category of the chart."""

    name: str
    values: Sequence[float]


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def format_count(value: float) -> str:
    return f"{value:,.0f}"


def format_share(value: float) -> str:
    return f"{value:.1%}"


def share_of(part: float, whole: float) -> str:
    """part / whole as a percentage; "n/a" for an empty whole."""
    return format_share(part / whole) if whole else "n/a"


def compact(value: float) -> str:
    """1234 -> 1.2k, 2_000_000 -> 2M: tick labels that fit under a bar."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def nice_ticks(top: float, share: bool, count: int = 5) -> list[float]:
    """Tick values from 0 past `top` in steps of 1, 2, 2.5 or 5 times a power of ten;
    counts never get fractional steps."""
    top = max(top, 1e-9 if share else 1.0)
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = [m * magnitude for m in (1, 2, 2.5, 5, 10)]
    if not share:  # whole numbers of documents: no 2.5 steps below 10, none under 1
        steps = [max(x, 1.0) for x in steps if x >= 10 or x == round(x) or x < 1]
    step = next(x for x in steps if x >= raw * (1 - 1e-9))
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _tick_label(value: float, share: bool) -> str:
    if not share:
        return compact(value)
    whole_percent = abs(value * 100 - round(value * 100)) < 1e-6
    return f"{value:.0%}" if whole_percent else f"{value:.1%}"


def _text(x: float, y: float, text: str, cls: str, anchor: str = "middle", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}"{extra}>'
            f"{escape(text)}</text>")


def _bar(x: float, y: float, w: float, h: float, fill: str, series: str, label: str,
         value: float, shown: str) -> str:
    tip = f"{label} · {series}: {shown}" if series else f"{label}: {shown}"
    return (f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" '
            f'height="{max(h, 0):.1f}" fill="{fill}" data-series="{escape(series)}" '
            f'data-label="{escape(label)}" data-value="{value:g}"><title>{escape(tip)}</title></rect>')


def _legend(series: Sequence[Series], x: float, y: float) -> list[str]:
    parts = []
    for i, s in enumerate(series):
        parts.append(f'<rect class="swatch" x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" '
                     f'fill="{color(i)}"/>')
        parts.append(_text(x + 14, y, s.name, "legend", "start"))
        x += 28 + 7 * len(s.name)
    return parts


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width:.0f} '
            f'{height:.0f}" width="{width:.0f}" height="{height:.0f}" role="img" '
            f'aria-label="{escape(title)}">' + _text(width / 2, 18, title, "title")
            + "".join(body) + "</svg>")


def column_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    share: bool = False,
    stacked: bool = False,
    reference: tuple[float, str] | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Vertical bars: one group per label, a bar per series side by side (or stacked),
    an optional dashed reference line `(value, its label)`."""
    top_band = TITLE_BAND + (LEGEND_BAND if len(series) > 1 else 0)
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    band = plot_w / max(len(labels), 1)
    # labels wider than their bar are slanted so that they do not run into each other
    slanted = max(map(len, labels), default=0) * LABEL_CHAR_WIDTH > band * 0.9
    bottom = MARGIN_BOTTOM + (24 if slanted else 0)
    plot_h = height - top_band - bottom
    heights = ([sum(s.values[i] for s in series) for i in range(len(labels))] if stacked
               else [v for s in series for v in s.values])
    ticks = nice_ticks(max([*heights, reference[0] if reference else 0, 0]), share)
    scale = plot_h / ticks[-1]
    base_y = top_band + plot_h
    body = _axes_y(ticks, scale, base_y, width, share)
    bar_w = band * 0.7 if stacked else band * 0.8 / max(len(series), 1)
    fmt = format_share if share else format_count
    for i, label in enumerate(labels):
        left = MARGIN_LEFT + i * band + (band * 0.15 if stacked else band * 0.1)
        y = base_y
        for k, s in enumerate(series):
            h = s.values[i] * scale
            x = left if stacked else left + k * bar_w
            y_top = y - h if stacked else base_y - h
            body.append(_bar(x, y_top, bar_w, h, color(k), s.name if len(series) > 1 else "",
                             label, s.values[i], fmt(s.values[i])))
            if stacked:
                y -= h
        cx = MARGIN_LEFT + (i + 0.5) * band
        if slanted:
            body.append(_text(cx, base_y + 14, label, "tick", "end",
                              f' transform="rotate(-35 {cx:.1f} {base_y + 14:.1f})"'))
        else:
            body.append(_text(cx, base_y + 16, label, "tick"))
    if reference:
        ry = base_y - reference[0] * scale
        body.append(f'<line class="reference" x1="{MARGIN_LEFT}" y1="{ry:.1f}" '
                    f'x2="{width - MARGIN_RIGHT}" y2="{ry:.1f}"/>')
        body.append(_text(width - MARGIN_RIGHT - 4, ry - 4, reference[1], "reference-label", "end"))
    if len(series) > 1:
        body += _legend(series, MARGIN_LEFT, TITLE_BAND + 12)
    body.append(_text(MARGIN_LEFT + plot_w / 2, height - 8, x_label, "axis-label"))
    body.append(_text(16, top_band + plot_h / 2, y_label, "axis-label", "middle",
                      f' transform="rotate(-90 16 {top_band + plot_h / 2:.1f})"'))
    return _svg(width, height, title, body)


def _axes_y(ticks: list[float], scale: float, base_y: float, width: int, share: bool) -> list[str]:
    """Horizontal grid lines with their tick labels, and the baseline."""
    parts = []
    for t in ticks:
        y = base_y - t * scale
        parts.append(f'<line class="grid" x1="{MARGIN_LEFT}" y1="{y:.1f}" '
                     f'x2="{width - MARGIN_RIGHT}" y2="{y:.1f}"/>')
        parts.append(_text(MARGIN_LEFT - 6, y + 4, _tick_label(t, share), "tick", "end"))
    parts.append(f'<line class="axis" x1="{MARGIN_LEFT}" y1="{base_y:.1f}" '
                 f'x2="{width - MARGIN_RIGHT}" y2="{base_y:.1f}"/>')
    return parts


def bar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    x_label: str,
    colors: Sequence[str] | None = None,
    width: int = WIDTH,
) -> str:
    """Horizontal bars of counts, one row per label (long labels fit), each bar
    annotated with its value; `colors` groups rows (e.g. by stage)."""
    height = TITLE_BAND + 12 + ROW_HEIGHT * len(labels) + 44
    plot_w = width - LABEL_COLUMN - MARGIN_RIGHT - 56  # room for the value after the bar
    ticks = nice_ticks(max([*values, 0]), share=False, count=4)
    scale = plot_w / ticks[-1]
    top = TITLE_BAND + 12
    bottom = top + ROW_HEIGHT * len(labels)
    body = []
    for t in ticks:
        x = LABEL_COLUMN + t * scale
        body.append(f'<line class="grid" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}"/>')
        body.append(_text(x, bottom + 16, compact(t), "tick"))
    for i, (label, value) in enumerate(zip(labels, values)):
        y = top + i * ROW_HEIGHT
        fill = colors[i] if colors else color(0)
        body.append(_bar(LABEL_COLUMN, y + 3, value * scale, ROW_HEIGHT - 6, fill, "", label,
                         value, format_count(value)))
        body.append(_text(LABEL_COLUMN - 6, y + ROW_HEIGHT - 7, label, "tick", "end"))
        body.append(_text(LABEL_COLUMN + value * scale + 4, y + ROW_HEIGHT - 7,
                          format_count(value), "value", "start"))
    body.append(f'<line class="axis" x1="{LABEL_COLUMN}" y1="{top}" x2="{LABEL_COLUMN}" y2="{bottom}"/>')
    body.append(_text(LABEL_COLUMN + plot_w / 2, height - 8, x_label, "axis-label"))
    return _svg(width, height, title, body)
