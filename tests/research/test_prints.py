"""The backtest over trade prints: each print a price the matching engine sees, in order,
with paper trading's touch/through rule; checked by hand and against an event at every
print."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quantmesh.exchange.sim.matching import FillRule
from quantmesh.research.engine import _Run
from quantmesh.research.errors import ResearchError
from quantmesh.research.prints import run_trades
from quantmesh.research.synthetic import random_walk_candles
from quantmesh.research.trades import Trades
from tests.research.support import FEE, setup

pytestmark = pytest.mark.timeout(60)


def prints(*prices: float, start_ms: int = 0) -> Trades:
    """One print a second at ``prices``."""
    out = Trades()
    for i, price in enumerate(prices):
        out.append({"timestamp": start_ms + i * 1000, "id": str(i + 1), "price": price,
                    "amount": 1.0, "side": "buy"})  # fmt: skip
    return out


def test_touch_fills_at_the_price_through_only_beyond_it() -> None:
    # Anchor 100, step 10: buys at 90, 80, 70. A print at 90 then one at 100.
    at_price = prints(100, 90, 100)
    touch = run_trades(setup(), at_price, "touch")
    assert [(f.side, f.price) for f in touch.fills] == [("buy", Decimal("90.00")),
                                                        ("sell", Decimal("100.00"))]  # fmt: skip
    amount = Decimal("1.111")
    assert touch.realized == Decimal(100) * amount * (1 - FEE) - Decimal(90) * amount * (1 + FEE)
    assert run_trades(setup(), at_price, "through").fills == []
    beyond = run_trades(setup(), prints(100, 89.99, 100.01), "through")
    assert [f.price for f in beyond.fills] == [Decimal("90.00"), Decimal("100.00")]
    assert beyond.realized == touch.realized and len(beyond.round_trips) == 1
    assert (beyond.source, beyond.fill, beyond.candles) == ("trades", "through", 3)


def test_a_jump_fills_every_order_it_passes_at_their_own_prices() -> None:
    record = run_trades(setup(), prints(100, 65, 66), "through")
    buys = [(f.price, f.ts) for f in record.fills]
    assert buys == [(Decimal("90.00"), 1.0), (Decimal("80.00"), 1.0), (Decimal("70.00"), 1.0)]
    # The grid planned once, at 65: sells one level above each bought level; new buys
    # below 65 only (60, 50, 40 with a window of 3).
    open_orders = sorted((o.side, o.price) for o in record.orders if o.status == "open")
    assert open_orders == [("buy", Decimal(p)) for p in ("40.00", "50.00", "60.00")] + [
        ("sell", Decimal(p)) for p in ("80.00", "90.00", "100.00")
    ]


def test_no_trades_is_an_error() -> None:
    with pytest.raises(ResearchError, match="no trades"):
        run_trades(setup(), Trades())


def _every_print(trades: Trades, fill: FillRule) -> _Run:
    """The reference: an event at every print, no shortcut, as the daemon does."""
    run = _Run(setup(interval=Decimal("1.5")), Decimal(100), False, False, fill)
    for ts, price in zip(trades.ts, trades.price, strict=True):
        run.event(round(price * 100), ts / 1000)
    return run


@pytest.mark.parametrize("fill", ["touch", "through"])
def test_events_only_where_something_can_change_match_every_print(fill: FillRule) -> None:
    candles = random_walk_candles(400, price=100.0, volatility=0.01, seed=8)
    trades = prints(
        *(
            p
            for i in range(len(candles))
            for p in (candles.high[i], candles.low[i], candles.close[i])
        )
    )
    shortcut = run_trades(setup(interval=Decimal("1.5")), trades, fill)
    reference = _every_print(trades, fill)
    assert shortcut.orders == reference.engine.all_orders()
    assert shortcut.fills == reference.engine.fills()
    assert shortcut.round_trips == reference.round_trips
    assert len(shortcut.round_trips) > 20
