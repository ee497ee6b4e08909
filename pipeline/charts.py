"""Small SVG charts for `xp report`, drawn here so the report needs no script, font or network.

A report is sent on and opened anywhere, often offline, so every chart is
plain inline SVG text. Colours are fixed hex values: a reader learns that
blue is the web, and the report test finds them in a screenshot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

#: One colour per channel, used by every chart that splits by channel.
CHANNEL_COLORS: dict[str, str] = {"web": "#2563eb", "app": "#059669", "support": "#d97706"}
#: Colours for lines in order; distinct from the alert red.
PALETTE: tuple[str, ...] = ("#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2")
ALERT_COLOR = "#dc2626"
ERROR_COLOR = "#9333ea"
_GRID = "#e5e7eb"
_AXIS = "#6b7280"
_INK = "#111827"
_FONT = 11

Format = Callable[[float], str]


@dataclass(frozen=True)
class Series:
    """One line: `points` are (epoch seconds, value or None for a gap)."""

    name: str
    color: str
    points: tuple[tuple[float, float | None], ...]


@dataclass(frozen=True)
class Band:
    """A period to mark on a time axis, such as an alert's: a short `label`, a longer `detail`."""

    start: float
    end: float
    label: str
    detail: str


def number(value: float) -> str:
    """A compact axis label: no trailing zeros, thousands as k."""
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.0f}"


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values covering [low, high], spaced 1, 2, 2.5 or 5 times a power of ten."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    steps = round((last - first) / step)
    return [round(first + i * step, 10) for i in range(steps + 1)]


_TIME_STEPS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def time_ticks(start: float, end: float, count: int = 6) -> list[float]:
    """Tick times on whole minutes, hours or days, at most about `count` of them."""
    step = next((s for s in _TIME_STEPS if (end - start) / s <= count), _TIME_STEPS[-1])
    first = math.ceil(start / step) * step
    return [float(t) for t in range(int(first), int(end) + 1, step)]


def time_label(epoch: float, span: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%d %b" if span > 2 * 86400 else "%H:%M")


def line_chart(
    series: Sequence[Series],
    *,
    start: float,
    end: float,
    fmt: Format = number,
    bands: Sequence[Band] = (),
    zero_based: bool = True,
    width: int = 560,
    height: int = 220,
    label: str = "",
) -> str:
    """Lines over time on a shared axis, with `bands` shaded behind them."""
    left, right, top, bottom = 46, 12, 20, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series for _, v in s.points if v is not None]
    low = min([*values, 0.0] if zero_based else values or [0.0])
    high = max(values or [1.0])
    ticks = nice_ticks(low, high)
    y_low, y_high = ticks[0], ticks[-1]
    span = max(end - start, 1.0)

    def x(t: float) -> float:
        return left + (min(max(t, start), end) - start) / span * plot_w

    def y(v: float) -> float:
        return top + plot_h - (v - y_low) / (y_high - y_low) * plot_h

    parts = [_svg_open("line", width, height, label)]
    badge_x = -math.inf
    for band in sorted(bands, key=lambda b: b.start):
        x0, x1 = x(band.start), x(band.end)
        # Badges of alerts that start close together sit side by side, not on top.
        badge_x = max(x0 + 7, badge_x + 15)
        parts.append(
            f'<g class="alert-band"><title>{escape(band.detail)}</title>'
            f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 3):.1f}" height="{plot_h}" '
            f'fill="{ALERT_COLOR}" fill-opacity="0.12"/>'
            f'<line x1="{x0:.1f}" x2="{x0:.1f}" y1="{top}" y2="{top + plot_h}" '
            f'stroke="{ALERT_COLOR}" stroke-width="1.5"/>'
            f'<circle cx="{badge_x:.1f}" cy="{top - 8}" r="7" fill="{ALERT_COLOR}"/>'
            f'<text x="{badge_x:.1f}" y="{top - 4.5}" text-anchor="middle" fill="#fff" '
            f'font-size="{_FONT - 1}" font-weight="600">{escape(band.label)}</text></g>'
        )
    for tick in ticks:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="{_GRID}"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="{_AXIS}" '
            f'font-size="{_FONT}">{escape(fmt(tick))}</text>'
        )
    for tick in time_ticks(start, end):
        parts.append(
            f'<text x="{x(tick):.1f}" y="{height - 6}" text-anchor="middle" fill="{_AXIS}" '
            f'font-size="{_FONT}">{time_label(tick, span)}</text>'
        )
    for s in series:
        parts.extend(_line(s, x, y))
    parts.append("</svg>")
    return "".join(parts)


def _line(s: Series, x: Callable[[float], float], y: Callable[[float], float]) -> list[str]:
    """The path of one series, broken where values are missing, with a dot per point."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in s.points:
        if v is None:
            runs.append([])
        else:
            runs[-1].append((x(t), y(v)))
    out = []
    for run in runs:
        if len(run) > 1:
            d = "M" + " L".join(f"{px:.1f} {py:.1f}" for px, py in run)
            out.append(
                f'<path class="series" d="{d}" fill="none" stroke="{s.color}" '
                f'stroke-width="2.2" stroke-linejoin="round"><title>{escape(s.name)}</title></path>'
            )
        out.extend(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.6" fill="{s.color}"/>' for px, py in run
        )
    return out


@dataclass(frozen=True)
class Bar:
    """One labelled bar of `(value, colour, tooltip)` segments, with a note after it."""

    label: str
    segments: tuple[tuple[float, str, str], ...]
    note: str


def bar_chart(bars: Sequence[Bar], *, kind: str, width: int = 560, label: str = "") -> str:
    """Horizontal bars on one scale; several segments make a stacked bar (a funnel by channel)."""
    left, right, row, thickness = 112, 120, 36, 22
    height = row * len(bars) + 8
    plot_w = width - left - right
    largest = max([sum(v for v, _, _ in bar.segments) for bar in bars] + [1e-9])
    parts = [_svg_open(kind, width, height, label)]
    for i, bar in enumerate(bars):
        top = 4 + i * row
        middle = top + thickness / 2 + 4
        parts.append(
            f'<text x="{left - 10}" y="{middle:.1f}" text-anchor="end" fill="{_INK}" '
            f'font-size="{_FONT + 1}">{escape(bar.label)}</text>'
        )
        x = float(left)
        for value, color, tooltip in bar.segments:
            length = value / largest * plot_w
            if length > 0:
                parts.append(
                    f'<rect class="bar" x="{x:.1f}" y="{top}" width="{max(length, 1):.1f}" '
                    f'height="{thickness}" fill="{color}"><title>{escape(tooltip)}</title></rect>'
                )
                x += length
        parts.append(
            f'<text x="{x + 8:.1f}" y="{middle:.1f}" fill="{_INK}" font-size="{_FONT + 1}">'
            f"{escape(bar.note)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_open(kind: str, width: int, height: int, label: str) -> str:
    return (
        f'<svg class="chart" data-chart="{kind}" '
        f'viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{escape(label)}" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, DejaVu Sans, sans-serif">'
    )
