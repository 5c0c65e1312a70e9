"""The summary figures, worked by hand on small grids (anchor 100, step 10, 100 USDT a
level, windows of 3, fee 0.1 %, lot 0.001)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quantmesh.research.engine import run_symbol
from quantmesh.research.summary import summarize
from tests.research.support import candles, setup

pytestmark = pytest.mark.timeout(30)

BUY_90 = Decimal(90) * Decimal("1.111")  # 99.99 quote for 1.111 at 90
FEE_90 = BUY_90 * Decimal("0.001")


def test_a_round_trip_and_what_it_took() -> None:
    # Opens at 100 (buys at 90, 80, 70), dips to 89 (the 90 fills, a buy at 60 joins, a
    # sell at 100 is placed), closes at 95; then 95 -> 101: the sell fills, buys return
    # to 90 and 100.
    summary = summarize(
        run_symbol(setup(), candles((100, 100, 89, 95), (95, 101, 95, 101)), 60_000)
    )
    sell = Decimal(100) * Decimal("1.111")
    pnl = sell * Decimal("0.999") - BUY_90 - FEE_90
    assert (summary.round_trips, summary.realized_pnl) == (1, pnl)
    assert summary.unrealized_pnl == 0
    assert summary.fees == FEE_90 + sell * Decimal("0.001")
    # Peak capital: after the sell at 100.01, open buys at 100 (1.000), 90 (1.111),
    # 80 (1.250), 70 (1.428) and 60 (1.666), no inventory.
    open_buys = Decimal(100) + BUY_90 + Decimal(100) + Decimal("99.96") + Decimal("99.96")
    assert summary.committed_capital == pytest.approx(float(open_buys))
    assert summary.return_pct == pytest.approx(float(pnl) / float(open_buys) * 100)
    assert summary.buy_and_hold_pct == pytest.approx(1.0)  # 100 -> 101
    assert summary.peak_inventory == pytest.approx(1.111)
    assert summary.max_drawdown == 0  # total PnL at the closes: +5.455, then +10.899
    assert summary.days_to_break_even == 0  # never below zero
    assert summary.time_at_max_position_pct is None  # no cap configured


def test_a_losing_run_has_a_drawdown_and_no_break_even() -> None:
    record = run_symbol(setup(), candles((100, 100, 85, 85), (85, 86, 84, 84)), 60_000)
    summary = summarize(record)
    cost = BUY_90 + FEE_90
    at_84 = Decimal("1.111") * 84 - cost
    assert summary.unrealized_pnl == at_84 and summary.realized_pnl == 0
    assert summary.max_drawdown == pytest.approx(-float(at_84))
    assert summary.days_to_break_even is None


def test_break_even_after_a_dip_and_time_at_the_cap() -> None:
    record = run_symbol(
        setup(max_position=Decimal(150)),
        candles((100, 100, 85, 85), (85, 101, 85, 101), (101, 101, 101, 101)),
        60_000,
    )
    summary = summarize(record)
    assert summary.days_to_break_even == pytest.approx(2 / 1440)  # back above at minute 2
    # With 150 USDT allowed, one 100 USDT buy fits: the others are held back.
    assert summary.time_at_max_position_pct == pytest.approx(100.0)
    assert record.skipped["position_cap"] > 0
