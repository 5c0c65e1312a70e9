"""A liquidation on the simulated exchange: asked by a person or set by a risk trigger, the
trader cancels its buys, sells what its levels hold at the price, never more, and buys
nothing after; an instance that takes over continues from the levels' holdings."""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from quantmesh.control.desired import ACTIVE, Desired
from quantmesh.exchange.sim.simulated import SimMarket, SimulatedExchange
from quantmesh.grid.liquidate import Liquidation
from quantmesh.grid.risk import RiskLimits
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.trader import Trader

from . import test_control, test_risk
from .support import FEE, RULES, SETTINGS, SYMBOL, until
from .test_control import Asked, open_sides, tick, ticking_until
from .test_risk import Board, triggered


def held(trader: Trader) -> Decimal:
    assert trader.book is not None
    return sum((level.holding for level in trader.book.state.levels.values()), Decimal(0))


def traded(exchange: SimulatedExchange, side: str) -> Decimal:
    return sum((f.amount for f in exchange.engine.fills() if f.side == side), Decimal(0))


def base_balance(exchange: SimulatedExchange) -> Decimal:
    balance = exchange.engine.balances().get("ETH")
    return Decimal(0) if balance is None else balance.free + balance.locked


async def buy_two_levels(exchange: SimulatedExchange) -> None:
    """Buys at 2000 and 1990 fill; their sells rest at 2010 and 2000."""
    exchange.set_price(SYMBOL, Decimal(2001))
    await until(lambda: len(exchange.engine.open_orders(SYMBOL)) == 3)
    await ticking_until(exchange, "1985", lambda: ("sell", "2000.00") in open_sides(exchange))


async def test_a_persons_liquidate_sells_what_is_held_and_buys_nothing_after(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    asked = Asked(ACTIVE)
    async with test_control.trading(exchange, repository, asked) as trader:
        await buy_two_levels(exchange)
        holding = held(trader)
        assert holding > 0 and base_balance(exchange) == holding
        asked.desired = Desired("liquidate", reason="way out", actor="ops", at=time.time())
        await ticking_until(exchange, "1985", lambda: held(trader) < RULES.min_amount)
        await ticking_until(exchange, "1985", lambda: open_sides(exchange) == [])
        sells = [o for o in exchange.engine.all_orders() if o.side == "sell" and o.filled > 0]
        assert {o.price for o in sells} == {Decimal("1985.00")}
        assert traded(exchange, "sell") <= traded(exchange, "buy")
        assert base_balance(exchange) == held(trader) >= 0  # the dust, if any, is still held
        placed = len(exchange.engine.all_orders())
        for price in ("1970", "2001", "1985"):  # the grid would buy and sell at these
            await tick(exchange, price)
        assert len(exchange.engine.all_orders()) == placed
        trips = await repository.get_round_trips(SYMBOL)
        assert len(trips) == 2 and all(trip.pnl < 0 for trip in trips)


async def test_a_stop_loss_that_liquidates_records_its_action_and_sells_out(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    board, metrics = Board(Asked(ACTIVE)), Metrics()
    limits = RiskLimits(stop_loss_price=Decimal(1986), actions={"stop_loss": "liquidate"})
    async with test_risk.trading(exchange, repository, limits, board, metrics) as trader:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(exchange.engine.open_orders(SYMBOL)) == 3)
        await ticking_until(exchange, "1985", lambda: board.recorded != [])
        assert board.recorded[0].action == "liquidate"
        assert board.asked.desired is not None and board.asked.desired.mode == "liquidate"
        await ticking_until(exchange, "1985", lambda: held(trader) < RULES.min_amount)
        await ticking_until(exchange, "1985", lambda: open_sides(exchange) == [])
        assert triggered(metrics, "stop_loss", "liquidate") == 1
        fees = sum((f.fee for f in exchange.engine.fills()), Decimal(0))
        paid = metrics.registry.get_sample_value(
            "quantmesh_fees_paid_total", {"symbol": SYMBOL, "currency": "USDT"}
        )
        assert paid is not None and abs(Decimal(str(paid)) - fees) < Decimal("1e-9")
        assert traded(exchange, "buy") > 0  # the buys at 2000 and 1990 filled, then sold
        assert traded(exchange, "sell") <= traded(exchange, "buy")
        assert base_balance(exchange) == held(trader)


async def test_a_trader_that_takes_over_a_liquidation_sells_only_what_is_left(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    """The first trader stops with the liquidation asked but not yet carried out; the next
    one (a restart, or another instance) reads the levels back and sells them, once."""
    asked = Asked(ACTIVE)
    async with test_control.trading(exchange, repository, asked) as first:
        await buy_two_levels(exchange)
        holding = held(first)
        asked.desired = Desired("liquidate", reason="way out", actor="ops", at=time.time())
    sold_before = traded(exchange, "sell")
    async with test_control.trading(exchange, repository, asked) as second:
        assert held(second) == holding - sold_before
        await ticking_until(exchange, "1985", lambda: held(second) < RULES.min_amount)
        await ticking_until(exchange, "1985", lambda: open_sides(exchange) == [])
    assert traded(exchange, "sell") <= traded(exchange, "buy")
    assert base_balance(exchange) >= 0
    sells = [o for o in exchange.engine.all_orders() if o.side == "sell" and o.filled > 0]
    assert sum((o.filled for o in sells), Decimal(0)) == traded(exchange, "sell")
    assert len({o.client_order_id for o in sells}) == len(sells)  # one sell per level cycle


async def test_after_market_after_the_sells_cross_the_book_within_the_slippage_bound(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    """Asked two minutes ago (on this instance or another): with allow_market, the sells go
    1 % below the price and fill at once, at the price the book gives."""
    asked = Asked(ACTIVE)
    market = Liquidation(allow_market=True, market_after=60.0, market_slippage=Decimal("0.01"))
    settings = replace(SETTINGS, liquidation=market)
    async with test_control.trading(exchange, repository, asked, settings) as trader:
        await buy_two_levels(exchange)
        asked.desired = Desired("liquidate", actor="ops", at=time.time() - 120)
        await ticking_until(exchange, "1985", lambda: held(trader) < RULES.min_amount)
    sells = [o for o in exchange.engine.all_orders() if o.side == "sell" and o.filled > 0]
    assert sells and {o.price for o in sells} == {Decimal("1965.15")}  # 1985 less 1 %
    fills = [f for f in exchange.engine.fills() if f.side == "sell"]
    assert {f.price for f in fills} == {Decimal(1985)}  # what the book gave


async def test_a_liquidation_cut_short_is_finished_by_the_next_trader_never_selling_twice(
    tmp_path: Path, repository: SqlRepository
) -> None:
    """On an exchange that fills a resting order only when the price goes through it, the
    liquidation's sells rest; the first trader stops (a crash: its orders stay open), the
    next one adopts them, re-prices them as the price falls and sells what is left, once."""
    exchange = SimulatedExchange(
        {SYMBOL: SimMarket(RULES, Decimal(2000))},
        {"USDT": Decimal(100000)},
        FEE,
        tmp_path / "through.db",
        fill_rule="through",
    )
    await exchange.start()
    try:
        asked = Asked(ACTIVE)
        fast = replace(SETTINGS, liquidation=Liquidation(reprice_interval=0.0))
        async with test_control.trading(exchange, repository, asked, fast) as first:
            exchange.set_price(SYMBOL, Decimal(2001))
            await until(lambda: len(exchange.engine.open_orders(SYMBOL)) == 3)
            await ticking_until(exchange, "1979", lambda: held(first) > Decimal("0.04"))
            holding = held(first)
            asked.desired = Desired("liquidate", actor="ops", at=time.time())
            await ticking_until(exchange, "1979", lambda: open_sides(exchange) == [
                ("sell", "1979.00")] * 3)  # fmt: skip
        assert traded(exchange, "sell") == 0  # resting at the price: nothing sold yet
        async with test_control.trading(exchange, repository, asked, fast) as second:
            assert held(second) == holding
            await ticking_until(exchange, "1975", lambda: open_sides(exchange) == [
                ("sell", "1975.00")] * 3)  # fmt: skip
            await ticking_until(exchange, "1975.01", lambda: held(second) < RULES.min_amount)
            await ticking_until(exchange, "1975.01", lambda: open_sides(exchange) == [])
        sold = [o for o in exchange.engine.all_orders() if o.side == "sell" and o.filled > 0]
        assert traded(exchange, "sell") == holding  # all of it, once
        assert {o.price for o in sold} == {Decimal("1975.00")}
        assert base_balance(exchange) == 0
    finally:
        await exchange.close()
