"""The simulator's price history: Binance's kline selection, aggregation, public prints."""

from __future__ import annotations

from decimal import Decimal

from quantmesh.exchange.sim.history import MINUTE_MS, PriceHistory

START = 1_700_000_040_000  # a minute boundary
NOW = START + 10 * MINUTE_MS + 30_000


def _history() -> PriceHistory:
    return PriceHistory(Decimal(2000), Decimal("0.01"), Decimal("0.0001"), START, days=1, seed=4)


def test_past_ends_at_the_start_price_and_is_repeatable() -> None:
    history = _history()
    last = history.minute(START // MINUTE_MS - 1, NOW)
    assert last is not None and last.close == Decimal("2000.00")
    first = history.minute(START // MINUTE_MS - 1440, NOW)
    assert first is not None and first.low <= first.open <= first.high
    assert history.minute(START // MINUTE_MS - 1441, NOW) is None  # before the history
    again = _history()
    assert again.klines(MINUTE_MS, None, None, 1000, NOW) == history.klines(
        MINUTE_MS, None, None, 1000, NOW
    )


def test_kline_selection_follows_binance() -> None:
    history = _history()
    begin = START - 100 * MINUTE_MS
    forward = history.klines(MINUTE_MS, begin + 1, None, 5, NOW)
    assert [c.open_ms for c in forward] == [begin + MINUTE_MS * i for i in range(1, 6)]
    back = history.klines(MINUTE_MS, None, begin, 3, NOW)
    assert [c.open_ms for c in back] == [begin - 2 * MINUTE_MS, begin - MINUTE_MS, begin]
    latest = history.klines(MINUTE_MS, None, None, 2, NOW)
    assert [c.open_ms for c in latest] == [START + 9 * MINUTE_MS, START + 10 * MINUTE_MS]
    bounded = history.klines(MINUTE_MS, begin, begin + 2 * MINUTE_MS, 100, NOW)
    assert len(bounded) == 3


def test_longer_candles_are_made_of_the_minutes() -> None:
    history = _history()
    hour = 3_600_000
    open_ms = (START - 5 * hour) // hour * hour
    [candle] = history.klines(hour, open_ms, open_ms, 10, NOW)
    minutes = history.klines(MINUTE_MS, open_ms, open_ms + hour - 1, 1000, NOW)
    assert len(minutes) == 60
    assert candle.open == minutes[0].open and candle.close == minutes[-1].close
    assert candle.high == max(m.high for m in minutes)
    assert candle.low == min(m.low for m in minutes)


def test_recorded_prices_make_the_live_candles() -> None:
    history = _history()
    history.record(START + 1_000, Decimal("2001.00"))
    history.record(START + 2_000, Decimal("1999.50"))
    history.record(START + 3_000, Decimal("2000.25"))
    live = history.minute(START // MINUTE_MS, NOW)
    assert live is not None
    assert (live.open, live.high, live.low, live.close) == (
        Decimal("2001.00"), Decimal("2001.00"), Decimal("1999.50"), Decimal("2000.25"),
    )  # fmt: skip
    quiet = history.minute(START // MINUTE_MS + 3, NOW)  # no price published then
    assert quiet is not None and quiet.open == quiet.close == Decimal("2000.25")
    assert history.minute(NOW // MINUTE_MS + 1, NOW) is None  # the future


def test_prints_follow_the_candle_path_with_growing_ids() -> None:
    history = _history()
    minute = START // MINUTE_MS - 30
    candle = history.minute(minute, NOW)
    prints = history.prints(minute, NOW)
    assert candle is not None and len(prints) == 4
    assert prints[0].price == candle.open and prints[-1].price == candle.close
    assert {prints[1].price, prints[2].price} == {candle.high, candle.low}
    span = history.trades_between(minute * MINUTE_MS, (minute + 2) * MINUTE_MS, 100, NOW)
    ids = [p.id for p in span]
    assert ids == sorted(ids) and len(ids) == 9  # two whole minutes and the third's open
    assert history.trades_from_id(ids[3], 2, NOW) == span[3:5]
    recent = history.recent_trades(6, NOW)  # no live price yet: the history's last prints
    assert [p.id for p in recent] == list(range(START // MINUTE_MS * 4 - 6, START // MINUTE_MS * 4))
