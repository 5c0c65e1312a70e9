"""A backtest's results as a JSON document and as a terminal table.

The JSON is deterministic: the same candles and settings give the same bytes (keys
sorted, money as exact decimal text, curve floats rounded, no wall-clock time in it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from quantmesh.research.engine import RunRecord
from quantmesh.research.summary import Summary, summarize

__all__ = ["Backtest", "render_json", "render_table"]

FORMAT_VERSION = 1
TRIP_FIELDS = ("level", "cycle", "amount", "buy_cost", "sell_proceeds", "pnl", "closed_at")


@dataclass(frozen=True, slots=True)
class Backtest:
    """A whole backtest: its inputs as given, and one record per symbol."""

    timeframe: str
    path_model: str
    start: str | None
    until: str | None
    records: tuple[RunRecord, ...]

    def summaries(self) -> list[Summary]:
        return [summarize(record) for record in self.records]


def _dec(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return f"{value.normalize():f}" if value else "0"


def _grid(record: RunRecord) -> dict[str, Any]:
    spec = record.spec
    return {
        "anchor": _dec(spec.anchor),
        "spacing": spec.spacing,
        "interval": _dec(spec.interval),
        "order_quantity": _dec(spec.order_quantity),
        "buy_window": spec.buy_window,
        "sell_window": spec.sell_window,
        "min_order_value": _dec(spec.min_order_value),
        "lower_price": _dec(spec.lower_price),
        "upper_price": _dec(spec.upper_price),
        "max_position": _dec(spec.max_position),
        "cancel_hysteresis": spec.cancel_hysteresis,
        "tag": record.tag,
        "fee_rate": _dec(record.setup.fee_rate),
        "tick_size": _dec(record.setup.rules.tick_size),
        "lot_size": _dec(record.setup.rules.lot_size),
        "min_notional": _dec(record.setup.rules.min_notional),
        "source": record.source,
        "fill": record.fill,
    }


def totals(summaries: list[Summary]) -> dict[str, Any]:
    """The sums over every symbol (committed capital adds up: symbols run side by side);
    ``max_drawdown_pct`` is the worst symbol's."""
    realized = sum((s.realized_pnl for s in summaries), Decimal(0))
    unrealized = sum((s.unrealized_pnl for s in summaries), Decimal(0))
    fees = sum((s.fees for s in summaries), Decimal(0))
    committed = sum(s.committed_capital for s in summaries)
    total = realized + unrealized
    return {
        "round_trips": sum(s.round_trips for s in summaries),
        "realized_pnl": _dec(realized),
        "unrealized_pnl": _dec(unrealized),
        "total_pnl": _dec(total),
        "fees": _dec(fees),
        "committed_capital": round(committed, 6),
        "return_pct": round(float(total) / committed * 100, 6) if committed > 0 else None,
        "max_drawdown_pct": max(
            (round(s.max_drawdown_pct, 6) for s in summaries if s.max_drawdown_pct is not None),
            default=None,
        ),
    }


def document(backtest: Backtest) -> dict[str, Any]:
    """The JSON document of ``backtest``."""
    symbols = []
    summaries = backtest.summaries()
    for record, summary in zip(backtest.records, summaries, strict=True):
        trips = [
            [t.level, t.cycle, _dec(t.amount), _dec(t.buy_cost), _dec(t.sell_proceeds),
             _dec(t.pnl), round(t.closed_at, 3)]
            for t in record.round_trips
        ]  # fmt: skip
        symbols.append(
            {
                **summary.as_json(),
                "grid": _grid(record),
                "round_trip_fields": list(TRIP_FIELDS),
                "round_trip_list": trips,
            }
        )
    return {
        "format": FORMAT_VERSION,
        "timeframe": backtest.timeframe,
        "path_model": backtest.path_model,
        "from": backtest.start,
        "until": backtest.until,
        "symbols": symbols,
        "total": totals(summaries),
    }


def render_json(backtest: Backtest) -> bytes:
    """The JSON file's bytes."""
    return (json.dumps(document(backtest), sort_keys=True, indent=1) + "\n").encode()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _money(value: Decimal | float) -> str:
    return f"{float(value):,.2f}"


_HEADER = (
    "SYMBOL", "ROUND TRIPS", "REALIZED", "UNREALIZED", "FEES", "CAPITAL", "RETURN %",
    "HOLD %", "MAX DD %", "AT CAP %", "BREAK-EVEN DAYS",
)  # fmt: skip


def render_table(summaries: list[Summary]) -> str:
    """The summary table: one row per symbol, then the total when there are several."""
    rows = [list(_HEADER)]
    for s in summaries:
        rows.append(
            [
                s.symbol,
                str(s.round_trips),
                _money(s.realized_pnl),
                _money(s.unrealized_pnl),
                _money(s.fees),
                _money(s.committed_capital),
                _pct(s.return_pct),
                _pct(s.buy_and_hold_pct),
                _pct(s.max_drawdown_pct),
                _pct(s.time_at_max_position_pct),
                "-" if s.days_to_break_even is None else f"{s.days_to_break_even:.1f}",
            ]
        )
    if len(summaries) > 1:
        t = totals(summaries)
        rows.append(
            ["TOTAL", str(t["round_trips"]), _money(Decimal(t["realized_pnl"])),
             _money(Decimal(t["unrealized_pnl"])), _money(Decimal(t["fees"])),
             _money(t["committed_capital"]), _pct(t["return_pct"]), "", "", "", ""]
        )  # fmt: skip
    widths = [max(len(row[c]) for row in rows) for c in range(len(_HEADER))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [v.rjust(widths[c]) for c, v in enumerate(row) if c]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
