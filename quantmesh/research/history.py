"""Candles and trades stored as Parquet: one file per exchange, symbol and timeframe.

``<data dir>/<exchange>/<BASE>_<QUOTE>-<timeframe>.parquet`` (``binance/ETH_USDT-1m.parquet``),
columns ``timestamp`` (UTC, ms) ``open high low close volume`` (float64), in time order,
one row per candle; pandas reads it with ``pandas.read_parquet(path)``. Public trades lie
beside them as ``<BASE>_<QUOTE>-trades.parquet``: columns ``timestamp`` ``id`` (text)
``price`` ``amount`` (float64) ``side`` (the taker's), one row per trade, in time order. The
file's metadata key ``quantmesh`` holds JSON: the exchange, symbol and timeframe (or
``trades``), and the market rules (tick, lot, minimums, fees) as the exchange listed them
when the data was fetched.

A file is written whole to a temporary name and renamed, so a reader (or a crash) never
sees half of one. ``pyarrow`` is imported here and nowhere the daemon goes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from quantmesh.research.candles import Candles, find_gaps, timeframe_ms
from quantmesh.research.errors import ResearchError
from quantmesh.research.files import readable_mode
from quantmesh.research.trades import TRADES, Trades

__all__ = [
    "DEFAULT_DATA_DIR",
    "StoredFile",
    "history_path",
    "list_history",
    "read_candles",
    "read_meta",
    "read_trades",
    "trades_path",
    "write_candles",
    "write_trades",
]

DEFAULT_DATA_DIR = Path("data/history")
_META_KEY = b"quantmesh"
_SCHEMA = pa.schema(
    [
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
    ]
)
_TRADES_SCHEMA = pa.schema(
    [
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("id", pa.string()),
        ("price", pa.float64()),
        ("amount", pa.float64()),
        ("side", pa.string()),
    ]
)


def history_path(data_dir: Path, exchange: str, symbol: str, timeframe: str) -> Path:
    """Where the candles of ``symbol`` (``ETH/USDT``) on ``exchange`` are stored."""
    return data_dir / exchange / f"{symbol.replace('/', '_')}-{timeframe}.parquet"


def trades_path(data_dir: Path, exchange: str, symbol: str) -> Path:
    """Where the public trades of ``symbol`` on ``exchange`` are stored (beside its candles)."""
    return history_path(data_dir, exchange, symbol, TRADES)


def write_candles(path: Path, candles: Candles, meta: dict[str, Any]) -> None:
    """Write ``candles`` (time order) with ``meta``, atomically: all of it or nothing."""
    columns = [
        pa.array(candles.ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        pa.array(candles.open, pa.float64()),
        pa.array(candles.high, pa.float64()),
        pa.array(candles.low, pa.float64()),
        pa.array(candles.close, pa.float64()),
        pa.array(candles.volume, pa.float64()),
    ]
    _write(path, columns, _SCHEMA, meta)


def write_trades(path: Path, trades: Trades, meta: dict[str, Any]) -> None:
    """Write ``trades`` (in order) with ``meta``, atomically: all of it or nothing."""
    columns = [
        pa.array(trades.ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        pa.array(trades.id, pa.string()),
        pa.array(trades.price, pa.float64()),
        pa.array(trades.amount, pa.float64()),
        pa.array(trades.side, pa.string()),
    ]
    _write(path, columns, _TRADES_SCHEMA, meta)


def _write(path: Path, columns: list[Any], schema: Any, meta: dict[str, Any]) -> None:
    schema = schema.with_metadata({_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    table = pa.Table.from_arrays(columns, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.chmod(tmp, readable_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _open_error(path: Path, exc: Exception) -> ResearchError:
    return ResearchError(f"{path} is not a readable candle file ({exc}); download it again")


def read_candles(path: Path, start_ms: int | None = None, end_ms: int | None = None) -> Candles:
    """The candles of ``path`` opening in ``[start_ms, end_ms)``."""
    if not path.is_file():
        raise ResearchError(f"no candles at {path}; fetch them with 'quantmesh data download'")
    try:
        table = pq.read_table(path, columns=[field.name for field in _SCHEMA])
    except (OSError, pa.ArrowException) as exc:
        raise _open_error(path, exc) from None
    ts = table.column("timestamp").cast(pa.int64()).to_pylist()
    candles = Candles(
        ts,
        table.column("open").to_pylist(),
        table.column("high").to_pylist(),
        table.column("low").to_pylist(),
        table.column("close").to_pylist(),
        table.column("volume").to_pylist(),
    )
    if start_ms is None and end_ms is None:
        return candles
    return candles.window(start_ms, end_ms)


def read_trades(path: Path, start_ms: int | None = None, end_ms: int | None = None) -> Trades:
    """The trades of ``path`` in ``[start_ms, end_ms)``."""
    if not path.is_file():
        raise ResearchError(
            f"no trades at {path}; fetch them with 'quantmesh data download --trades'"
        )
    try:
        table = pq.read_table(path, columns=[field.name for field in _TRADES_SCHEMA])
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise ResearchError(
            f"{path} is not a readable trades file ({exc}); download it again"
        ) from None
    trades = Trades(
        table.column("timestamp").cast(pa.int64()).to_pylist(),
        table.column("id").to_pylist(),
        table.column("price").to_pylist(),
        table.column("amount").to_pylist(),
        table.column("side").to_pylist(),
    )
    if start_ms is None and end_ms is None:
        return trades
    return trades.window(start_ms, end_ms)


def read_meta(path: Path) -> dict[str, Any]:
    """The ``quantmesh`` metadata of a stored file (``{}`` when it has none)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise _open_error(path, exc) from None
    raw = metadata.get(_META_KEY)
    if raw is None:
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One stored file, as ``data list`` shows it."""

    exchange: str
    symbol: str
    timeframe: str
    path: Path
    rows: int
    first_ms: int | None
    last_ms: int | None
    missing: int | None  # candles missing between the first and the last (trades: None)


def list_history(data_dir: Path) -> list[StoredFile]:
    """Every stored candle and trades file under ``data_dir``, in the order of their paths."""
    found: list[StoredFile] = []
    for path in sorted(data_dir.glob("*/*.parquet")):
        meta = read_meta(path)
        stem = path.stem
        symbol_part, _, timeframe = stem.rpartition("-")
        symbol = str(meta.get("symbol") or symbol_part.replace("_", "/"))
        timeframe = str(meta.get("timeframe") or timeframe)
        try:
            ts = pq.read_table(path, columns=["timestamp"]).column("timestamp")
        except (OSError, pa.ArrowException) as exc:
            raise _open_error(path, exc) from None
        stamps = ts.cast(pa.int64()).to_pylist()
        missing: int | None = None if timeframe == TRADES else 0
        if stamps and timeframe and timeframe != TRADES:
            step = timeframe_ms(timeframe)
            missing = sum((b - a) // step + 1 for a, b in find_gaps(stamps, step))
        found.append(
            StoredFile(
                exchange=path.parent.name,
                symbol=symbol,
                timeframe=timeframe,
                path=path,
                rows=len(stamps),
                first_ms=stamps[0] if stamps else None,
                last_ms=stamps[-1] if stamps else None,
                missing=missing,
            )
        )
    return found
