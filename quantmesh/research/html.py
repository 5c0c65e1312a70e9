"""The HTML report: one self-contained file (inline SVG and CSS, no script, nothing
fetched), readable offline. Per symbol: the figures, the price with every fill (thinned
to ``MAX_MARKERS`` markers on long runs), the equity curve (total PnL), the inventory and
the realized PnL per day (UTC)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from quantmesh.research.charts import Box, scale
from quantmesh.research.engine import RunRecord
from quantmesh.research.report import Backtest, render_table
from quantmesh.research.summary import Summary

__all__ = ["render_html"]

W, H, PAD = 960, 220, 48
MAX_MARKERS = 4000
_STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#1f2328;max-width:1040px}
h1{font-size:20px}h2{font-size:17px;margin-top:32px}h3{font-size:14px;margin:18px 0 4px}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}pre{background:#f6f8fa;padding:8px}
svg{background:#fff;border:1px solid #d0d7de}.axis{font:11px sans-serif;fill:#57606a}
"""


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _num(value: float) -> str:
    return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"


def _frame(box: Box, title: str) -> list[str]:
    return [
        f'<svg viewBox="0 0 {W + 2 * PAD} {H + 2 * PAD}" width="100%" role="img">',
        f"<title>{html.escape(title)}</title>",
        f'<text class="axis" x="{PAD}" y="{PAD - 8}">{_num(box.y1)}</text>',
        f'<text class="axis" x="{PAD}" y="{H + PAD + 14}">{_num(box.y0)}</text>',
        f'<text class="axis" x="{PAD}" y="{H + 2 * PAD - 6}">{_day(box.x0)}</text>',
        (
            f'<text class="axis" x="{W + PAD}" y="{H + 2 * PAD - 6}" text-anchor="end">'
            f"{_day(box.x1)}</text>"
        ),
        f'<rect x="{PAD}" y="{PAD}" width="{W}" height="{H}" fill="none" stroke="#d0d7de"/>',
    ]


def _polyline(box: Box, xs: Sequence[float], ys: Sequence[float], color: str) -> str:
    ax, bx, ay, by = scale(box, W, H)
    points = " ".join(
        f"{ax * x + bx + PAD:.1f},{ay * y + by + PAD:.1f}" for x, y in zip(xs, ys, strict=True)
    )
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.2" points="{points}"/>'


def _line_chart(xs: Sequence[float], ys: Sequence[float], title: str, color: str) -> str:
    box = Box.around(xs, ys, zero=True)
    parts = _frame(box, title)
    _, _, ay, by = scale(box, W, H)
    if box.y0 < 0 < box.y1:
        y = ay * 0 + by + PAD
        parts.append(f'<line x1="{PAD}" x2="{W + PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="#999"/>')
    parts.append(_polyline(box, xs, ys, color))
    parts.append("</svg>")
    return "\n".join(parts)


def _price_chart(record: RunRecord) -> str:
    curve = record.curve
    fills = sorted(record.fills, key=lambda f: (f.ts, int(f.trade_id)))
    step = max(1, -(-len(fills) // MAX_MARKERS))
    shown = fills[::step]
    ys = curve.price + [float(f.price) for f in shown]
    box = Box.around(curve.ts, ys)
    parts = _frame(box, f"{record.spec.symbol} price and fills")
    parts.append(_polyline(box, curve.ts, curve.price, "#57606a"))
    ax, bx, ay, by = scale(box, W, H)
    for fill in shown:
        x, y = ax * fill.ts + bx + PAD, ay * float(fill.price) + by + PAD
        color = "#1a7f37" if fill.side == "buy" else "#d1242f"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{color}"/>')
    parts.append("</svg>")
    note = f"{len(fills)} fills" + (f", 1 in {step} shown" if step > 1 else "")
    return "\n".join(parts) + f"\n<p>{note}; buys green, sells red.</p>"


def _daily_chart(record: RunRecord) -> str:
    days: dict[str, Decimal] = {}
    for trip in record.round_trips:
        day = _day(trip.closed_at)
        days[day] = days.get(day, Decimal(0)) + trip.pnl
    if not days:
        return "<p>No round trip closed.</p>"
    names = sorted(days)
    values = [float(days[d]) for d in names]
    box = Box.around([0.0, float(len(names))], values, zero=True)
    parts = _frame(box, "realized PnL per day")[:3]  # no date axis: days are bars
    parts.append(f'<rect x="{PAD}" y="{PAD}" width="{W}" height="{H}" fill="none" '
                 'stroke="#d0d7de"/>')  # fmt: skip
    ax, bx, ay, by = scale(box, W, H)
    zero = ay * 0 + by + PAD
    width = max(ax * 0.8, 0.5)
    for i, value in enumerate(values):
        top = ay * value + by + PAD
        y, height = min(top, zero), abs(zero - top)
        color = "#1a7f37" if value >= 0 else "#d1242f"
        parts.append(
            f'<rect x="{ax * i + bx + PAD:.1f}" y="{y:.1f}" width="{width:.1f}" '
            f'height="{height:.1f}" fill="{color}"><title>{names[i]}: {value:.4f}</title></rect>'
        )
    parts.append(
        f'<text class="axis" x="{PAD}" y="{H + 2 * PAD - 6}">{names[0]}</text>'
        f'<text class="axis" x="{W + PAD}" y="{H + 2 * PAD - 6}" text-anchor="end">'
        f"{names[-1]}</text></svg>"
    )
    return "\n".join(parts)


def _section(record: RunRecord, summary: Summary) -> str:
    figures = summary.as_json()
    for key in ("start", "end"):
        figures[key] = datetime.fromtimestamp(figures[key], UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in figures.items()
        if k != "skipped"
    )
    spec = record.spec
    grid = (
        f"anchor {spec.anchor}, {spec.spacing} step {spec.interval}, {spec.order_quantity} "
        f"{record.setup.rules.quote} per level, windows {spec.buy_window}/{spec.sell_window}, "
        f"max_position {spec.max_position}, fee {record.setup.fee_rate}; "
        + (
            f"{record.candles:,} trade prints"
            if record.source == "trades"
            else f"{record.candles:,} candles"
        )
        + f", fill {record.fill}"
    )
    curve = record.curve
    return "\n".join(
        [
            f"<h2>{html.escape(spec.symbol)}</h2>",
            f"<p>{html.escape(grid)}</p>",
            f"<table>{rows}</table>",
            "<h3>Price and fills</h3>",
            _price_chart(record),
            "<h3>Equity (total PnL, quote)</h3>",
            _line_chart(curve.ts, curve.equity, "equity", "#1f6feb"),
            "<h3>Inventory (base)</h3>",
            _line_chart(curve.ts, curve.inventory, "inventory", "#9a6700"),
            "<h3>Realized PnL per day</h3>",
            _daily_chart(record),
        ]
    )


def render_html(backtest: Backtest) -> bytes:
    """The report's bytes."""
    summaries = backtest.summaries()
    period = f"{backtest.start or 'the first price'} to {backtest.until or 'the last'}"
    trades = all(record.source == "trades" for record in backtest.records)
    body = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>QuantMesh backtest</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>QuantMesh backtest</h1>",
        (
            f"<p>{html.escape(period)}, trade prints in order.</p>"
            if trades
            else f"<p>{html.escape(period)}, {backtest.timeframe} candles, "
            f"path model <b>{html.escape(backtest.path_model)}</b>.</p>"
        ),
        f"<pre>{html.escape(render_table(summaries))}</pre>",
    ]
    for record, summary in zip(backtest.records, summaries, strict=True):
        body.append(_section(record, summary))
    body.append("</body></html>")
    return ("\n".join(body) + "\n").encode()
