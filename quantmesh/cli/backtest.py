"""``quantmesh backtest -c PATH``: every configured symbol over its stored trades or candles.

The grid runs through the daemon's own planner, ledger, client ids and matching rules in
simulated time (``quantmesh.research``). Prints a summary table and writes
``report.json``, ``report.html`` and ``equity.png`` under ``--out``. With ``--sweep`` it
runs every combination of the swept settings in parallel processes, prints them ranked,
and saves each one's reports under ``--out/NNN/``.

Exit codes: 0 done; 1 a report or data file cannot be written or read; 2 bad flags,
configuration, sweep spec or missing data (one line saying what and what to do; nothing
written).
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from quantmesh.cli.exit_codes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, print_error
from quantmesh.cli.options import add_config_option

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers
    from quantmesh.research.runner import Request, SweepRow

DEFAULT_DATA = Path("data/history")
DEFAULT_OUT = Path("backtest")


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "backtest", help="run the configured grids over stored trades or candles (and sweeps)"
    )
    add_config_option(parser)
    parser.add_argument("--from", dest="start", metavar="DATE", help="first day (UTC)")
    parser.add_argument("--until", metavar="DATE", help="end, excluded (UTC)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report directory")
    parser.add_argument(
        "--exchange", help="whose candles (default: the configured exchange, else binance)"
    )
    parser.add_argument("--timeframe", default="1m", help="candle length (default 1m)")
    parser.add_argument(
        "--path",
        dest="path_model",
        choices=("nearer", "pessimistic"),
        default="nearer",
        help="the price path inside a candle: open, nearer extreme, farther extreme, close "
        "(default); or pessimistic: open, high, low, close",
    )
    parser.add_argument(
        "--source",
        choices=("auto", "candles", "trades"),
        default="auto",
        help="the prices: stored trade prints, one after the other, or candles along their "
        "path (default auto: trades where they are stored, else candles)",
    )
    parser.add_argument(
        "--fill",
        choices=("touch", "through"),
        help="a resting order fills when the price reaches it (touch) or goes past it "
        "(through); default: the configured exchange's rule, else touch on candles and "
        "through on trades",
    )
    parser.add_argument("--fee-rate", help="fee per fill instead of the market's, e.g. 0.001")
    parser.add_argument(
        "--sweep",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME=VALUES",
        help="sweep a grid setting: NAME=FROM:TO:COUNT or NAME=V1,V2 (e.g. "
        "price_interval=0.2%%:1%%:5 buy_window_size=5,10,20)",
    )
    parser.add_argument(
        "--rank-by",
        default="return_pct",
        choices=("return_pct", "total_pnl", "realized_pnl", "round_trips", "max_drawdown_pct"),
        help="the sweep's ranking (default return_pct)",
    )
    parser.add_argument("--jobs", type=int, help="sweep processes (default: every core)")


def run(args: argparse.Namespace) -> int:
    from quantmesh.research.errors import ResearchError

    try:
        request = _request(args)
        if args.sweep:
            return _sweep(args, request)
        return _single(args, request)
    except ResearchError as exc:
        print_error(str(exc))
        return EXIT_CONFIG
    except OSError as exc:  # an output or data directory that cannot be written or read
        print_error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return EXIT_FAILURE


def _request(args: argparse.Namespace) -> Request:
    from quantmesh.config import load_settings
    from quantmesh.research.candles import parse_day, timeframe_ms
    from quantmesh.research.errors import ResearchError
    from quantmesh.research.runner import Request
    from quantmesh.research.setup import data_exchange, symbol_sources

    timeframe_ms(args.timeframe)
    start = None if args.start is None else parse_day(args.start, "--from")
    end = None if args.until is None else parse_day(args.until, "--until")
    if start is not None and end is not None and end <= start:
        raise ResearchError(f"--until {args.until} must be after --from {args.start}")
    fee: Decimal | None = None
    if args.fee_rate is not None:
        try:
            fee = Decimal(args.fee_rate)
        except InvalidOperation:
            fee = Decimal(-1)
        if not (fee.is_finite() and 0 <= fee < 1):
            raise ResearchError(f"--fee-rate {args.fee_rate!r}: give a share in [0, 1), e.g. 0.001")
    if args.jobs is not None and args.jobs < 1:
        raise ResearchError(f"--jobs {args.jobs}: give at least 1")
    settings = load_settings(args.config)
    exchange = data_exchange(settings, args.exchange)
    sources = symbol_sources(
        settings, args.data, exchange, args.timeframe, fee, args.source, args.fill
    )
    return Request(
        tuple(sources), args.timeframe, args.path_model, start, end, args.start, args.until
    )


def _progress(symbol: str, done: int, total: int) -> None:
    print(f"\r{symbol}: {done:,}/{total:,} candles", end="", file=sys.stderr, flush=True)
    if done == total:
        print(file=sys.stderr)


def _single(args: argparse.Namespace, request: Request) -> int:
    from quantmesh.research.report import render_table
    from quantmesh.research.runner import run_backtest, write_reports

    progress = _progress if sys.stderr.isatty() else None
    backtest = run_backtest(request, progress=progress)
    written = write_reports(backtest, args.out)
    print(render_table(backtest.summaries()), end="")
    print("reports: " + ", ".join(str(path) for path in written))
    return EXIT_OK


def _sweep(args: argparse.Namespace, request: Request) -> int:
    from quantmesh.research.files import write_atomic
    from quantmesh.research.runner import rank, run_sweep
    from quantmesh.research.sweep import combinations, parse_sweep

    combos = combinations(parse_sweep(args.sweep))

    def done(finished: int, total: int) -> None:
        print(f"\rsweep: {finished}/{total} runs", end="", file=sys.stderr, flush=True)
        if finished == total:
            print(file=sys.stderr)

    rows = run_sweep(request, combos, args.out, args.jobs, done if sys.stderr.isatty() else None)
    ranked = rank(rows, args.rank_by)
    ranking = [
        {"rank": n, "settings": row.label, "out": row.out, **row.figures}
        for n, row in enumerate(ranked, start=1)
    ]
    data = json.dumps({"rank_by": args.rank_by, "runs": ranking}, sort_keys=True, indent=1)
    write_atomic(args.out / "sweep.json", (data + "\n").encode())
    print(_sweep_table(ranked), end="")
    print(f"ranked by {args.rank_by}; reports under {args.out}/NNN/, ranking in "
          f"{args.out / 'sweep.json'}")  # fmt: skip
    return EXIT_OK


def _sweep_table(rows: list[SweepRow]) -> str:
    header = ["RANK", "SETTINGS", "RETURN %", "TOTAL PNL", "ROUND TRIPS", "MAX DD %", "CAPITAL"]
    lines = [header]
    for n, row in enumerate(rows, start=1):
        f = row.figures

        def pct(key: str, f: dict[str, object] = f) -> str:
            value = f.get(key)
            return "-" if value is None else f"{float(str(value)):.2f}"

        lines.append(
            [str(n), row.label, pct("return_pct"), f"{float(str(f['total_pnl'])):,.2f}",
             str(f["round_trips"]), pct("max_drawdown_pct"),
             f"{float(str(f['committed_capital'])):,.2f}"]
        )  # fmt: skip
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    out = []
    for line in lines:
        cells = [v.ljust(widths[c]) if c < 2 else v.rjust(widths[c]) for c, v in enumerate(line)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"
