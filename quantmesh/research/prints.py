"""One symbol's grid run over public trades: every print a price, in the exchange's order.

The trade model, as paper trading sees a venue: each print is a price the matching engine
is told, one after the other, and nothing in between - the price jumps from one print to
the next. A resting buy fills at its own price when a print is at or below it (``touch``)
or strictly below it (``through``, paper trading's default); a sell likewise above. Then
the grid plans at that print's price, as the daemon does on each price it receives. What
the model cannot know: where our order would stand in the queue at its price (``touch``
assumes first, ``through`` assumes last and needs the price to go past it), and how our
own orders would have moved the market (they take nothing from the book the prints came
from). The amounts of the prints are not used.

Between prints that reach no order and cross no level nothing can change (see
``engine``), so such a print costs two integer comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal

from quantmesh.domain import floor_to
from quantmesh.exchange.sim.matching import FillRule
from quantmesh.research.engine import CURVE_POINTS, _Run, record_of
from quantmesh.research.errors import ResearchError
from quantmesh.research.record import Curve, RunRecord, SymbolSetup
from quantmesh.research.trades import Trades

__all__ = ["run_trades"]


def run_trades(
    setup: SymbolSetup,
    trades: Trades,
    fill: FillRule = "through",
    *,
    trace: bool = False,
    progress: Callable[[int], None] | None = None,
) -> RunRecord:
    """Run ``setup``'s grid over ``trades`` (in order); ``trace`` keeps every event.

    The figures a candle run takes at each close (equity, drawdown, time at
    ``max_position``) are taken at each print."""
    n = len(trades)
    if n == 0:
        raise ResearchError(f"{setup.rules.symbol}: no trades in the chosen period")
    tick = setup.rules.tick_size
    inv = 1 / float(tick)
    ts_list, prices = trades.ts, trades.price
    first = max(round(prices[0] * inv), 1)
    anchor = setup.params.anchor_price
    start = floor_to(Decimal(first) * tick, tick) if anchor is None else anchor
    run = _Run(setup, start, trace, fill=fill)
    run.event(first, ts_list[0] / 1000)
    every = max(1, math.ceil(n / CURVE_POINTS))
    curve = Curve()
    peak_eq = max_dd = 0.0
    capped = 0
    below = False  # total PnL below zero at the last print
    recovered: float | None = None  # print time at which the last stretch below zero ended
    price = first
    for i in range(n):
        price = max(round(prices[i] * inv), 1)
        if not (run.quiet_low < price < run.quiet_high):
            run.event(price, ts_list[i] / 1000)
        equity = run.realized + run.inventory * prices[i] - run.cost
        if equity > peak_eq:
            peak_eq = equity
        elif peak_eq - equity > max_dd:
            max_dd = peak_eq - equity
        if equity < 0:
            below, recovered = True, None
        elif below:
            below, recovered = False, ts_list[i] / 1000
        if run.capped:
            capped += 1
        if i % every == 0 or i == n - 1:
            curve.ts.append(ts_list[i] / 1000)
            curve.price.append(prices[i])
            curve.equity.append(equity)
            curve.inventory.append(run.inventory)
            if progress is not None:
                progress(i + 1)
    return record_of(
        run,
        setup,
        rows=n,
        start=ts_list[0] / 1000,
        end=ts_list[-1] / 1000,
        first=first,
        last=price,
        curve=curve,
        max_drawdown=max_dd,
        capped=capped,
        went_below=below or recovered is not None,
        recovered_at=recovered,
        source="trades",
    )
