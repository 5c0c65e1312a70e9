"""``quantmesh data download|list``: price history for backtests.

``download`` fetches candles (and with ``--trades`` the public trades too) through ccxt's
public endpoints (no keys) into Parquet files under ``--data-dir`` (see
``quantmesh.research.download``); a second run fetches only what is missing. ``list``
shows what is stored.

Exit codes: 0 done; 1 the exchange kept failing (what was fetched is saved); 2 bad flags
(one line saying what and what to do).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantmesh.cli.exit_codes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, print_error

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers
    from quantmesh.research.download import DownloadReport

DEFAULT_DATA = Path("data/history")


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("data", help="download and list price history")
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    down = sub.add_parser("download", help="fetch candles into the data directory")
    down.add_argument("--exchange", required=True, help="a ccxt exchange id, e.g. binance")
    down.add_argument("--symbol", action="append", required=True, help="e.g. ETH/USDT (repeatable)")
    down.add_argument("--timeframe", default="1m", help="candle length (default 1m)")
    down.add_argument("--since", required=True, metavar="DATE", help="first day (UTC)")
    down.add_argument("--until", metavar="DATE", help="end, excluded (default: now)")
    down.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="data directory")
    down.add_argument(
        "--trades",
        action="store_true",
        help="also fetch the public trades (for backtests on trade prints; much more data)",
    )
    down.add_argument(
        "--urls", type=_json_object, default={}, help="JSON merged over ccxt's urls (a proxy)"
    )
    down.add_argument(
        "--options", type=_json_object, default={}, help="JSON of ccxt options for the exchange"
    )
    listing = sub.add_parser("list", help="show the stored candles and trades")
    listing.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="data directory")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def run(args: argparse.Namespace) -> int:
    from quantmesh.research.errors import ResearchError

    try:
        if args.data_command == "list":
            return _list(args.data_dir)
        return _download(args)
    except ResearchError as exc:
        print_error(str(exc))
        return EXIT_CONFIG
    except OSError as exc:  # an output or data directory that cannot be written or read
        print_error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return EXIT_FAILURE


def _day(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _list(data_dir: Path) -> int:
    from quantmesh.research.history import list_history

    files = list_history(data_dir) if data_dir.is_dir() else []
    if not files:
        print(f"no candles under {data_dir}; fetch some with 'quantmesh data download'")
        return EXIT_OK
    rows = [["EXCHANGE", "SYMBOL", "TIMEFRAME", "ROWS", "FIRST", "LAST", "MISSING", "FILE"]]
    for f in files:
        missing = "-" if f.missing is None else f"{f.missing:,}"
        rows.append(
            [f.exchange, f.symbol, f.timeframe, f"{f.rows:,}", _day(f.first_ms),
             _day(f.last_ms), missing, str(f.path)]
        )  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(widths[c]) for c, v in enumerate(r)).rstrip())
    return EXIT_OK


def _client(args: argparse.Namespace) -> Any:
    import ccxt

    from quantmesh.research.errors import ResearchError

    cls = getattr(ccxt, args.exchange, None)
    if args.exchange not in ccxt.exchanges or cls is None:
        raise ResearchError(f"--exchange {args.exchange!r} is not a ccxt exchange id")
    config: dict[str, Any] = {"enableRateLimit": True, "options": args.options}
    if args.urls:
        config["urls"] = args.urls
    client = cls(config)
    if not client.has.get("fetchOHLCV"):
        raise ResearchError(f"--exchange {args.exchange}: ccxt cannot fetch its candles")
    if args.trades and not client.has.get("fetchTrades"):
        raise ResearchError(f"--exchange {args.exchange}: ccxt cannot fetch its public trades")
    return client


def _bar(symbol: str) -> Any:
    def show(done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = int(share * 30)
        bar = "#" * filled + "." * (30 - filled)
        print(f"\r{symbol} [{bar}] {share:6.1%} {done:,}/{total:,}", end="", file=sys.stderr)
        if done >= total:
            print(file=sys.stderr)

    return show


def _download(args: argparse.Namespace) -> int:
    import ccxt

    from quantmesh.config import normalise_symbol
    from quantmesh.research.candles import parse_day, timeframe_ms
    from quantmesh.research.download import Job, download
    from quantmesh.research.errors import FetchFailed, ResearchError
    from quantmesh.research.trades import TRADES

    step = timeframe_ms(args.timeframe)
    since = parse_day(args.since, "--since")
    now = int(time.time() * 1000) // step * step  # the current candle is not finished
    until = now if args.until is None else min(parse_day(args.until, "--until"), now)
    if until <= since:
        raise ResearchError(f"--until must be after --since ({args.since}) and not in the future")
    symbols = []
    for text in args.symbol:
        try:
            symbols.append(normalise_symbol(text))
        except ValueError as exc:
            raise ResearchError(f"--symbol {text!r}: {exc}") from None
    client = _client(args)
    try:
        client.load_markets()
    except ccxt.BaseError as exc:
        print_error(f"{args.exchange}: markets could not be loaded ({exc}); try again later")
        return EXIT_FAILURE
    failed = False
    kinds = [args.timeframe, TRADES] if args.trades else [args.timeframe]
    for symbol in symbols:
        for kind in kinds:
            job = Job(args.exchange, symbol, kind, since, until)
            progress = _bar(symbol if kind != TRADES else f"{symbol} trades")
            try:
                report = download(
                    client, job, args.data_dir, progress=progress if sys.stderr.isatty() else None
                )
            except FetchFailed as exc:
                print_error(str(exc))
                failed = True
                continue
            _summary(symbol, kind, report, step)
    return EXIT_FAILURE if failed else EXIT_OK


def _summary(symbol: str, kind: str, report: DownloadReport, step: int) -> None:
    from quantmesh.research.download import PAGE
    from quantmesh.research.trades import TRADES

    what = "trades" if kind == TRADES else "candles"
    print(
        f"{symbol}: {report.fetched:,} new {what}, {report.rows:,} stored in "
        f"{report.path} ({report.requests} requests, {report.retries} retried)"
    )
    if report.crowded:
        print(
            f"{symbol}: {report.crowded} milliseconds held more trades than a page of "
            f"{PAGE}; trades beyond the page in them are missing"
        )
    if report.gaps:
        missing = sum((b - a) // step for a, b in report.gaps)
        shown = ", ".join(f"{_day(a)} .. {_day(b - step)}" for a, b in report.gaps[:5])
        more = f" and {len(report.gaps) - 5} more" if len(report.gaps) > 5 else ""
        print(f"{symbol}: {len(report.gaps)} gaps, {missing:,} candles missing: {shown}{more}")
