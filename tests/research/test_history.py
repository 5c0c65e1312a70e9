"""The Parquet store: round trips, metadata, atomic writes, listing, and what a reader
without QuantMesh sees."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from quantmesh.research.candles import Candles, find_gaps, parse_day, timeframe_ms
from quantmesh.research.errors import ResearchError
from quantmesh.research.history import (
    history_path,
    list_history,
    read_candles,
    read_meta,
    write_candles,
)
from tests.research.support import candles

pytestmark = pytest.mark.timeout(30)


def test_written_candles_read_back_and_by_other_readers(tmp_path: Path) -> None:
    data = candles((1.5, 2.25, 1.0, 2.0), (2.0, 2.5, 1.75, 2.5), start_ms=1_735_689_600_000)
    path = history_path(tmp_path, "binance", "ETH/USDT", "1m")
    assert path == tmp_path / "binance" / "ETH_USDT-1m.parquet"
    write_candles(path, data, {"symbol": "ETH/USDT", "market": {"tick_size": "0.01"}})
    assert read_candles(path) == data
    assert read_meta(path)["market"] == {"tick_size": "0.01"}
    table = pq.read_table(path)  # as pandas or any Parquet reader sees it
    assert table.column_names == ["timestamp", "open", "high", "low", "close", "volume"]
    assert str(table.schema.field("timestamp").type) == "timestamp[ms, tz=UTC]"
    assert table.column("close").to_pylist() == [2.0, 2.5]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_window_is_half_open(tmp_path: Path) -> None:
    data = candles(*[(1.0, 1.0, 1.0, 1.0)] * 5)
    path = tmp_path / "x.parquet"
    write_candles(path, data, {})
    assert read_candles(path, 60_000, 180_000).ts == [60_000, 120_000]
    assert read_candles(path, None, 60_000).ts == [0]


def test_missing_and_broken_files_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ResearchError, match="quantmesh data download"):
        read_candles(tmp_path / "none.parquet")
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(ResearchError, match="download it again"):
        read_candles(broken)


def test_list_shows_rows_span_and_missing_candles(tmp_path: Path) -> None:
    data = candles(*[(1.0, 1.0, 1.0, 1.0)] * 3)
    data.append((600_000, 1.0, 1.0, 1.0, 1.0, 0.0))  # 7 candles missing before it
    write_candles(history_path(tmp_path, "binance", "BTC/USDT", "1m"), data,
                  {"symbol": "BTC/USDT", "timeframe": "1m"})  # fmt: skip
    [stored] = list_history(tmp_path)
    assert (stored.exchange, stored.symbol, stored.timeframe) == ("binance", "BTC/USDT", "1m")
    assert (stored.rows, stored.first_ms, stored.last_ms, stored.missing) == (4, 0, 600_000, 7)


def test_timeframes_days_and_gaps() -> None:
    assert timeframe_ms("1m") == 60_000 and timeframe_ms("4h") == 14_400_000
    with pytest.raises(ResearchError, match="timeframe '7m' is not supported"):
        timeframe_ms("7m")
    assert parse_day("2025-01-01", "--from") == 1_735_689_600_000
    with pytest.raises(ResearchError, match="--from 'yesterday' is not a date"):
        parse_day("yesterday", "--from")
    assert find_gaps([0, 60_000, 240_000, 300_000], 60_000) == [(120_000, 180_000)]


def test_merged_prefers_the_newer_rows() -> None:
    old = candles((1, 1, 1, 1), (2, 2, 2, 2))
    new = Candles()
    new.append((60_000, 3, 3, 3, 3, 0))
    new.append((120_000, 4, 4, 4, 4, 0))
    merged = old.merged(new)
    assert merged.ts == [0, 60_000, 120_000] and merged.close == [1, 3, 4]
