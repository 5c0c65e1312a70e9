"""``quantmesh status -c PATH``: per-symbol state from the database, as a plain table.

The table has a header row, then one row per grid; with a fleet (``distributed_lock``
enabled) it says which instance owns each symbol now, and the notes below it name the
live instances. Besides what the grid holds, each row has its figures over its whole
history (``grid.pnl.performance``): total PnL at the last price, fees in the quote
currency and in others (``BNB:0.0012``, unconverted), the capital it committed, the
return on it, and buy-and-hold of that capital (percent). ``wiring`` reads the database
and the fleet; this module shapes and prints what they hold.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from quantmesh.cli.exit_codes import EXIT_OK
from quantmesh.cli.options import add_config_option

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers
    from quantmesh.config import Settings


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("status", help="per-symbol state from the database")
    add_config_option(parser)
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per grid, and the notes, for scripts"
    )


def run(args: argparse.Namespace) -> int:
    from quantmesh.config import load_settings

    settings = load_settings(args.config)
    from quantmesh.wiring import check_database_exists

    check_database_exists(settings)
    import asyncio  # here: the parser of every command loads this module

    rows, notes = asyncio.run(read_status(settings))
    if args.json:
        print(json.dumps(status_json(rows, notes), indent=1))
        return EXIT_OK
    print(format_status(rows), end="")
    if len(rows) > 1:
        for note in notes:
            print(note)
    return EXIT_OK


async def read_status(settings: Settings) -> tuple[list[list[str]], list[str]]:
    """The ``quantmesh status`` table (a header row, then one row per grid) and the notes
    below it. With a fleet, the table says which instance owns each symbol now."""
    from quantmesh.grid.pnl import Performance, performance, quote_of
    from quantmesh.wiring import read_owners, read_summaries

    summaries = await read_summaries(settings)
    history = await read_trades(settings)
    owners, notes = await read_owners(settings)
    header = ["EXCHANGE", "SYMBOL", "LAST PRICE", "INVENTORY", "OPEN ORDERS", "ROUND TRIPS"]
    header += ["REALIZED PNL", "TOTAL PNL", "FEES", "OTHER FEES", "CAPITAL", "RETURN PCT"]
    header += ["HOLD PCT"]
    header += ["OWNER"] if owners is not None else []
    rows = [header]
    for summary in summaries:
        trades = history.get((summary.exchange, summary.symbol), [])
        figures: Performance = performance(trades, summary.last_price)
        row = [
            summary.exchange,
            summary.symbol,
            _fmt(summary.last_price),
            _fmt(summary.inventory),
            str(summary.open_orders),
            str(summary.round_trips),
            _fmt(summary.realized_pnl),
            _fmt(figures.total),
            _fmt(figures.fees.get(quote_of(summary.symbol), Decimal(0))),
            ",".join(
                f"{currency}:{_fmt(amount)}"
                for currency, amount in sorted(figures.fees.items())
                if currency != quote_of(summary.symbol)
            )
            or "-",
            _fmt(figures.capital),
            _fmt(figures.return_percent),
            _fmt(figures.hold_percent),
        ]
        if owners is not None:
            row.append(
                owners.get(summary.symbol, "-")
                if summary.exchange == settings.exchange.name
                else ""
            )
        rows.append(row)
    return rows, notes


async def read_trades(settings: Settings) -> dict[tuple[str, str], list[dict[str, object]]]:
    """Every fill in the database, by (exchange, symbol), oldest first (one transaction)."""
    from sqlalchemy import Connection

    from quantmesh.storage import export
    from quantmesh.storage.runner import runner_for
    from quantmesh.wiring import build_engine

    def work(conn: Connection) -> dict[tuple[str, str], list[dict[str, object]]]:
        export.check_schema(conn)
        grouped: dict[tuple[str, str], list[dict[str, object]]] = {}
        for trade in export.trades(conn, export.ExportFilter()):
            grouped.setdefault((trade["exchange"], trade["symbol"]), []).append(trade)
        return grouped

    db = settings.database
    runner = runner_for(build_engine(settings), None, db.connect_timeout + db.statement_timeout)
    try:
        return await runner.run("status_trades", work, write=False)
    finally:
        await runner.close()


def status_json(rows: Sequence[Sequence[str]], notes: Sequence[str]) -> dict[str, object]:
    """``--json``: ``{"grids": [{"exchange": ..., "last_price": ...}], "notes": [...]}``, the
    table's columns as snake_case keys; counts as numbers, decimals as exact strings (as
    the table shows them), ``-`` as null."""
    if not rows:
        return {"grids": [], "notes": list(notes)}
    keys = [title.lower().replace(" ", "_") for title in rows[0]]
    grids = [
        {key: _json_value(key, value) for key, value in zip(keys, row, strict=True)}
        for row in rows[1:]
    ]
    return {"grids": grids, "notes": list(notes)}


def _json_value(key: str, value: str) -> str | int | None:
    if value == "-":
        return None
    return int(value) if key in ("open_orders", "round_trips") else value


def format_status(rows: Sequence[Sequence[str]]) -> str:
    """A plain text table; the first row is the header."""
    if len(rows) <= 1:
        return "no grid recorded yet: run `quantmesh run` first\n"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def _fmt(value: Decimal | None) -> str:
    if value is None:
        return "-"
    return f"{value.normalize():f}"
