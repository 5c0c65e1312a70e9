"""``quantmesh export {trades,round-trips,orders,daily}``: what the database holds, as CSV
or JSON for a spreadsheet, a tax tool or a script.

    quantmesh export trades -c config.yaml [--symbol ETH/USDT] [--since 2026-01-01]
                            [--until 2026-02-01] [--format csv|json] [-o trades.csv]

Reads the database the settings name (any of the three), never writes to it, and needs no
running daemon. Rows of the settings' exchange (``--exchange`` names another, ``all``
every one), oldest first; ``--since`` inclusive, ``--until`` exclusive, both ISO 8601
dates or times (UTC unless an offset is given). Times are written in ISO 8601 UTC
(``2026-12-04T11:36:40.153Z``), amounts as exact decimals. ``-o FILE`` is written whole
or not at all.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from quantmesh.cli.exit_codes import EXIT_OK
from quantmesh.cli.options import add_config_option
from quantmesh.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from quantmesh.cli.options import Subparsers
    from quantmesh.config import Settings
    from quantmesh.storage.export import ExportFilter

KINDS: Final = ("trades", "round-trips", "orders", "daily")
# Columns holding Unix times, written as ISO 8601 UTC.
TIME_COLUMNS: Final = frozenset({"time", "closed_at", "created_at", "updated_at"})


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="trades, round trips, orders or daily PnL from the database, as CSV/JSON"
    )
    parser.add_argument("kind", choices=KINDS, help="what to export")
    add_config_option(parser)
    parser.add_argument("--symbol", help="only this symbol (e.g. ETH/USDT)")
    parser.add_argument(
        "--exchange", help="another exchange's rows, or 'all' (default: the configured one)"
    )
    parser.add_argument("--since", help="from this UTC date or time, inclusive (ISO 8601)")
    parser.add_argument("--until", help="up to this UTC date or time, exclusive (ISO 8601)")
    parser.add_argument("--format", choices=("csv", "json"), default="csv")
    parser.add_argument("-o", "--output", type=Path, help="write to FILE (default: stdout)")


def run(args: argparse.Namespace) -> int:
    from quantmesh.config import load_settings, normalise_symbol

    since, until = parse_time(args.since, "--since"), parse_time(args.until, "--until")
    if since is not None and until is not None and until <= since:
        raise ConfigError(["--until: must be later than --since"])
    symbol = None
    if args.symbol:
        try:
            symbol = normalise_symbol(args.symbol)
        except ValueError as exc:
            raise ConfigError([f"--symbol: {exc}"]) from None
    settings = load_settings(args.config)
    from quantmesh.storage.export import ExportFilter

    exchange = args.exchange or settings.exchange.name
    where = ExportFilter(
        exchange=None if exchange == "all" else exchange, symbol=symbol, since=since, until=until
    )
    import asyncio  # here: the parser of every command loads this module

    columns, records = asyncio.run(read(settings, args.kind, where))
    text = render(columns, records, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomically(args.output, text)
    return EXIT_OK


async def read(
    settings: Settings, kind: str, where: ExportFilter
) -> tuple[Sequence[str], list[dict[str, Any]]]:
    """The columns and records of ``kind``, read in one transaction."""
    from quantmesh.grid import pnl
    from quantmesh.storage import export
    from quantmesh.storage.runner import runner_for
    from quantmesh.wiring import build_engine, check_database_exists

    check_database_exists(settings)
    readers: dict[str, tuple[Sequence[str], Callable[[Connection], list[dict[str, Any]]]]] = {
        "trades": (export.TRADE_COLUMNS, lambda c: list(export.trades(c, where))),
        "round-trips": (export.ROUND_TRIP_COLUMNS, lambda c: list(export.round_trips(c, where))),
        "orders": (export.ORDER_COLUMNS, lambda c: list(export.orders(c, where))),
        "daily": (
            pnl.DAILY_COLUMNS,
            lambda c: pnl.daily(export.trades(c, where), export.round_trips(c, where)),
        ),
    }
    columns, reader = readers[kind]

    def work(conn: Connection) -> list[dict[str, Any]]:
        export.check_schema(conn)
        return reader(conn)

    db = settings.database
    runner = runner_for(build_engine(settings), None, db.connect_timeout + db.statement_timeout)
    try:
        records = await runner.run(f"export_{kind}", work, write=False)
    finally:
        await runner.close()
    return columns, records


def parse_time(text: str | None, option: str) -> float | None:
    """An ISO 8601 date or time as Unix seconds (UTC unless it carries an offset)."""
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            [
                f"{option}: {text!r} is not an ISO 8601 date or time (e.g. 2026-01-31 or 2026-01-31T08:00)"
            ]
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso(timestamp: float) -> str:
    """Unix seconds -> ``2026-12-04T11:36:40.153Z``."""
    text = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def cell(column: str, value: Any) -> str | int:
    """One value as written: times in ISO 8601, decimals exact and plain."""
    if column in TIME_COLUMNS:
        return iso(float(value))
    if isinstance(value, Decimal):
        return f"{value.normalize():f}" if value else "0"
    return value if isinstance(value, int) else str(value)


def render(columns: Sequence[str], records: Iterable[dict[str, Any]], fmt: str) -> str:
    """CSV with a header row, or a JSON array of objects (decimals as strings)."""
    rows = [[cell(c, record[c]) for c in columns] for record in records]
    if fmt == "json":
        return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=1) + "\n"
    import csv  # here: the parser of every command loads this module

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` whole, or nothing there at all (a temporary file renamed)."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ConfigError([f"-o: {directory} is not a directory"])
    import tempfile  # here: the parser of every command loads this module

    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
