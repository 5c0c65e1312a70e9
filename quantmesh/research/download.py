"""Fetching candles and trades through ccxt into the Parquet store: paged, rate-limited,
resumable.

- Pages of ``fetch_ohlcv(symbol, timeframe, since, limit)`` walk forward from ``since``;
  the client runs with ccxt's ``enableRateLimit`` (it spaces requests by the exchange's
  published weight), and an answer of 429/418 or a network error is retried after the
  exchange's ``Retry-After`` or an exponential backoff (1, 2, 4 ... 60 s).
- The stretches of time already fetched are stored with the file (``covered``): a second
  run asks only for what lies outside them, and a hole the exchange had no candles for is
  reported as a gap, not fetched again and again. The file is written every
  ``checkpoint`` pages, so an interrupted download resumes from its last checkpoint.
- The market's rules (tick, lot, minimums, taker fee) are stored with the candles, for
  backtests of an exchange's market.
- Trades (``timeframe`` ``trades``) page by time through ``fetch_trades(symbol, since,
  limit, {"until": ...})`` in windows of an hour at most (Binance's ``aggTrades`` answers no
  longer span): a full page moves the start to its last trade's millisecond (the trades of
  that millisecond come again and are kept once, by id), a page that is not full covers
  its whole window. Stored beside the candles, ``<BASE>_<QUOTE>-trades.parquet``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quantmesh.research.candles import Candles, find_gaps, timeframe_ms
from quantmesh.research.errors import FetchFailed, ResearchError
from quantmesh.research.history import (
    history_path,
    read_candles,
    read_meta,
    read_trades,
    write_candles,
    write_trades,
)
from quantmesh.research.trades import TRADES, Trades

__all__ = ["DownloadReport", "Job", "download", "merge_spans", "missing_spans"]

PAGE = 1000
MAX_RETRIES = 8
MAX_BACKOFF = 60.0
CHECKPOINT_PAGES = 50
TRADE_WINDOW_MS = 3_600_000

Span = tuple[int, int]  # [start, end) in epoch ms


@dataclass(frozen=True, slots=True)
class Job:
    """One symbol's download: ``[since_ms, until_ms)`` of ``timeframe`` candles."""

    exchange: str
    symbol: str
    timeframe: str
    since_ms: int
    until_ms: int


@dataclass(slots=True)
class DownloadReport:
    """What a download did."""

    symbol: str
    path: str
    fetched: int = 0  # new candles
    requests: int = 0
    retries: int = 0
    rows: int = 0  # candles in the file afterwards
    gaps: list[Span] = field(default_factory=list)  # missing stretches inside the file
    crowded: int = 0  # milliseconds with more trades than a page (the rest of them missed)


def merge_spans(spans: list[Span]) -> list[Span]:
    """Overlapping or touching spans joined, in order."""
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def missing_spans(wanted: Span, covered: list[Span]) -> list[Span]:
    """The parts of ``wanted`` outside every covered span."""
    start, end = wanted
    missing: list[Span] = []
    for c_start, c_end in merge_spans(covered):
        if c_end <= start or c_start >= end:
            continue
        if c_start > start:
            missing.append((start, c_start))
        start = max(start, c_end)
    if start < end:
        missing.append((start, end))
    return missing


def _retry_after(client: Any) -> float | None:
    headers = getattr(client, "last_response_headers", None) or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _fetch_page(
    client: Any, job: Job, since: int, report: DownloadReport, sleep: Callable[[float], None]
) -> list[Any]:
    return _fetch(
        lambda: client.fetch_ohlcv(job.symbol, job.timeframe, since, PAGE),
        client,
        job,
        report,
        sleep,
    )


def _fetch(
    call: Callable[[], list[Any]],
    client: Any,
    job: Job,
    report: DownloadReport,
    sleep: Callable[[float], None],
) -> list[Any]:
    import ccxt

    for attempt in range(MAX_RETRIES + 1):
        report.requests += 1
        try:
            return call()
        except ccxt.NetworkError as exc:  # 429/418 (DDoSProtection), timeouts, 5xx
            if attempt == MAX_RETRIES:
                raise FetchFailed(
                    f"{job.symbol}: {job.exchange} kept failing ({type(exc).__name__}: {exc}); "
                    "what was fetched is saved, run the same command again later"
                ) from None
            report.retries += 1
            delay = _retry_after(client)
            sleep(delay if delay is not None else min(MAX_BACKOFF, 2.0**attempt))
        except ccxt.BaseError as exc:
            raise ResearchError(f"{job.symbol}: {job.exchange} refused: {exc}") from None
    raise AssertionError("unreachable")


def _market_meta(client: Any, job: Job) -> dict[str, Any]:
    import ccxt

    from quantmesh.exchange.ccxt.convert import market_rules

    try:
        market = client.market(job.symbol)
    except ccxt.BaseError as exc:
        raise ResearchError(f"{job.symbol}: not a market of {job.exchange} ({exc})") from None
    meta: dict[str, Any] = {}
    try:
        rules = market_rules(market, client.precisionMode)
    except (ValueError, KeyError):
        return meta
    meta["tick_size"] = str(rules.tick_size)
    meta["lot_size"] = str(rules.lot_size)
    meta["min_amount"] = str(rules.min_amount)
    meta["min_notional"] = str(rules.min_notional)
    if market.get("taker") is not None:
        meta["taker_fee"] = str(market["taker"])
    return meta


def download(
    client: Any,
    job: Job,
    data_dir: Any,
    *,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int, int], None] | None = None,
    checkpoint: int = CHECKPOINT_PAGES,
) -> DownloadReport:
    """Fetch what ``data_dir`` lacks of ``job`` (``client``: a ccxt exchange, markets loaded)."""
    if job.timeframe == TRADES:
        return download_trades(
            client, job, data_dir, sleep=sleep, progress=progress, checkpoint=checkpoint
        )
    step = timeframe_ms(job.timeframe)
    path = history_path(data_dir, job.exchange, job.symbol, job.timeframe)
    report = DownloadReport(job.symbol, str(path))
    meta = read_meta(path) if path.is_file() else {}
    stored = read_candles(path) if path.is_file() else Candles()
    covered: list[Span] = [(int(a), int(b)) for a, b in meta.get("covered", [])]
    meta.update(exchange=job.exchange, symbol=job.symbol, timeframe=job.timeframe)
    meta["market"] = _market_meta(client, job) or meta.get("market", {})
    todo = missing_spans((job.since_ms, job.until_ms), covered)
    total = sum(end - start for start, end in todo) // step
    done = 0
    fresh = Candles()
    pages = 0

    def save() -> None:
        nonlocal stored, fresh
        stored = stored.merged(fresh)
        report.fetched += len(fresh)
        fresh = Candles()
        meta["covered"] = [list(span) for span in merge_spans(covered)]
        write_candles(path, stored, meta)

    for start, end in todo:
        cursor = start
        while cursor < end:
            rows = _fetch_page(client, job, cursor, report, sleep)
            rows = [r for r in rows if cursor <= int(r[0]) < end]
            reached = end if not rows else int(rows[-1][0]) + step
            for row in rows:
                fresh.append(row)
            covered.append((cursor, min(reached, end)))
            done += (min(reached, end) - cursor) // step
            cursor = reached
            pages += 1
            if progress is not None:
                progress(min(done, total), total)
            if pages % checkpoint == 0:
                save()
    if todo or not path.is_file():
        save()
    report.rows = len(stored)
    report.gaps = [(a, b + step) for a, b in find_gaps(stored.ts, step)]
    return report


def download_trades(
    client: Any,
    job: Job,
    data_dir: Any,
    *,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int, int], None] | None = None,
    checkpoint: int = CHECKPOINT_PAGES,
    page: int = PAGE,
) -> DownloadReport:
    """Fetch the trades ``data_dir`` lacks of ``job`` (see the module docstring), ``page``
    trades a request; ``progress`` counts minutes of the period."""
    path = history_path(data_dir, job.exchange, job.symbol, TRADES)
    report = DownloadReport(job.symbol, str(path))
    meta = read_meta(path) if path.is_file() else {}
    stored = read_trades(path) if path.is_file() else Trades()
    covered: list[Span] = [(int(a), int(b)) for a, b in meta.get("covered", [])]
    meta.update(exchange=job.exchange, symbol=job.symbol, timeframe=TRADES)
    meta["market"] = _market_meta(client, job) or meta.get("market", {})
    todo = missing_spans((job.since_ms, job.until_ms), covered)
    total = sum(end - start for start, end in todo) // 60_000
    done = 0
    fresh = Trades()
    pages = 0

    def save() -> None:
        nonlocal stored, fresh
        before = len(stored)
        stored = stored.merged(fresh)
        report.fetched += len(stored) - before
        fresh = Trades()
        meta["covered"] = [list(span) for span in merge_spans(covered)]
        write_trades(path, stored, meta)

    for start, end in todo:
        cursor = start
        while cursor < end:
            until = min(cursor + TRADE_WINDOW_MS, end)  # exclusive
            rows = _fetch(
                functools.partial(
                    client.fetch_trades, job.symbol, cursor, page, {"until": until - 1}
                ),
                client,
                job,
                report,
                sleep,
            )
            inside = [t for t in rows if cursor <= int(t["timestamp"]) < until]
            reached = until
            if len(rows) >= page and inside:
                reached = int(inside[-1]["timestamp"])
                if reached == cursor:  # a whole page in one millisecond: paging cannot go on
                    report.crowded += 1
                    reached = cursor + 1
            for trade in inside:  # a trade fetched twice is kept once (merged by id)
                fresh.append(trade)
            covered.append((cursor, reached))
            done += reached - cursor
            cursor = reached
            pages += 1
            if progress is not None:
                progress(min(done // 60_000, total), total)
            if pages % checkpoint == 0:
                save()
    if todo or not path.is_file():
        save()
    if progress is not None and todo:
        progress(total, total)
    report.rows = len(stored)
    return report
