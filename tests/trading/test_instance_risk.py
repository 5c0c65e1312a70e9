"""The instance's limits on two real traders of the simulated exchange: a trigger holds
every symbol through its trader's risk guard, stored as desired state; a person's resume
of one symbol re-arms the watch; a hold found after a restart keeps it in force."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from quantmesh.control.desired import ACTIVE, Desired
from quantmesh.domain import MarketRules
from quantmesh.exchange.sim.simulated import SimMarket, SimulatedExchange
from quantmesh.grid.risk import InstanceLimits
from quantmesh.grid.state import GridParams
from quantmesh.lock.keys import LockKeys
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.instance_risk import InstanceRisk
from quantmesh.trading.trader import Trader

from .support import FEE, RULES, SETTINGS, SYMBOL, settle, until
from .test_control import Asked
from .test_risk import Board

BTC = "BTC/USDT"
BTC_RULES = MarketRules(
    BTC, "BTC", "USDT", Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), Decimal(5)
)
BTC_SETTINGS = replace(
    SETTINGS,
    grid=GridParams(
        symbol=BTC,
        interval=Decimal(100),
        order_quantity=Decimal(30),
        buy_window=3,
        sell_window=3,
        min_order_value=Decimal(10),
        anchor_price=Decimal(40000),
        cancel_hysteresis=1,
    ),
)


class Pair:
    """Two traders, ETH/USDT and BTC/USDT, each with its own board, on one exchange."""

    def __init__(self, exchange: SimulatedExchange, eth: Trader, btc: Trader) -> None:
        self.exchange = exchange
        self.eth, self.btc = eth, btc
        self.boards: dict[str, Board] = {}

    def open_buys(self, symbol: str) -> int:
        return sum(1 for o in self.exchange.engine.open_orders(symbol) if o.side == "buy")

    def open_orders(self) -> int:
        return sum(len(self.exchange.engine.open_orders(s)) for s in (SYMBOL, BTC))

    async def tick(self, symbol: str, price: str) -> None:
        self.exchange.set_price(symbol, Decimal(price))
        await settle()


@asynccontextmanager
async def pair(tmp_path: Path, repository: SqlRepository) -> AsyncIterator[Pair]:
    markets = {SYMBOL: SimMarket(RULES, Decimal(2000)), BTC: SimMarket(BTC_RULES, Decimal(40000))}
    exchange = SimulatedExchange(markets, {"USDT": Decimal(100000)}, FEE, tmp_path / "pair.db")
    await exchange.start()
    metrics = Metrics()
    boards = {symbol: Board(Asked(ACTIVE)) for symbol in (SYMBOL, BTC)}
    traders = {
        symbol: Trader(
            settings,
            exchange=exchange,
            repository=repository,
            locker=NopLock(),
            lock_keys=LockKeys("simulated"),
            metrics=metrics,
            control=boards[symbol].asked,
            risk_record=boards[symbol],
        )
        for symbol, settings in (
            (SYMBOL, replace(SETTINGS, count_days=True)),
            (BTC, BTC_SETTINGS),
        )
    }
    tasks = [asyncio.create_task(trader.run()) for trader in traders.values()]
    async with AsyncExitStack() as stack:
        stack.push_async_callback(exchange.close)
        try:
            await until(lambda: all(t.ready.is_set() for t in traders.values()))
            result = Pair(exchange, traders[SYMBOL], traders[BTC])
            result.boards = boards
            await result.tick(SYMBOL, "2001")
            await result.tick(BTC, "40001")
            await until(lambda: result.open_buys(SYMBOL) == 3 and result.open_buys(BTC) == 3)
            yield result
        finally:
            for task in tasks:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task


def recorded(pair: Pair, symbol: str) -> list[tuple[str, str]]:
    return [(f.trigger, f.action) for f in pair.boards[symbol].recorded]


async def test_max_total_position_stops_the_buys_of_every_symbol_until_resumed(
    tmp_path: Path, repository: SqlRepository
) -> None:
    async with pair(tmp_path, repository) as p:
        watch = InstanceRisk(
            InstanceLimits(max_total_position=Decimal(150)),
            traders=lambda: [p.eth, p.btc],
            wall_clock=time.time,
        )
        watch.check()  # 6 open buys of about 30 USDT: 180 > 150
        assert p.eth.control is not None and p.eth.control.mode == "stop_buys"  # at once
        await until(lambda: all(p.boards[s].recorded for s in (SYMBOL, BTC)))  # then stored
        for symbol in (SYMBOL, BTC):
            assert recorded(p, symbol) == [("max_total_position", "stop_buys")]
        await p.tick(SYMBOL, "2001")
        await p.tick(BTC, "40001")
        await until(lambda: p.open_orders() == 0)
        watch.check()
        assert len(p.boards[SYMBOL].recorded) == 1  # in force: nothing fires twice

        p.boards[SYMBOL].asked.desired = Desired("active", actor="ops", at=time.time() + 0.001)
        watch.check()  # re-armed from an exposure of 0
        await p.tick(SYMBOL, "2001")
        await until(lambda: p.open_buys(SYMBOL) == 3)
        watch.check()  # 90 < 150
        assert len(p.boards[SYMBOL].recorded) == 1 and p.open_buys(BTC) == 0


async def test_max_daily_loss_halts_every_symbol_and_a_restart_keeps_it_in_force(
    tmp_path: Path, repository: SqlRepository
) -> None:
    async with pair(tmp_path, repository) as p:
        limits = InstanceLimits(max_daily_loss=Decimal(20))
        watch = InstanceRisk(limits, traders=lambda: [p.eth, p.btc], wall_clock=time.time)
        watch.check()
        assert recorded(p, SYMBOL) == []  # nothing lost yet
        await p.tick(SYMBOL, "1975")  # three buys fill
        await p.tick(SYMBOL, "1500")  # and those the grid placed below: a loss
        await until(lambda: p.eth.position is not None and p.eth.position.unrealized < -20)
        watch.check()
        await until(lambda: all(p.boards[s].recorded for s in (SYMBOL, BTC)))
        for symbol in (SYMBOL, BTC):
            assert recorded(p, symbol) == [("max_daily_loss", "halt")]
        await p.tick(SYMBOL, "1500")
        await p.tick(BTC, "40001")
        await until(lambda: p.open_orders() == 0)  # halt: every order cancelled

        after_restart = InstanceRisk(limits, traders=lambda: [p.eth, p.btc], wall_clock=time.time)
        after_restart.check()  # the stored holds put the trigger back in force
        assert len(p.boards[SYMBOL].recorded) == len(p.boards[BTC].recorded) == 1
        p.boards[BTC].asked.desired = Desired("active", actor="ops", at=time.time() + 0.001)
        after_restart.check()  # a resume re-arms it from the loss of this moment
        assert len(p.boards[BTC].recorded) == 1
        held = p.boards[SYMBOL].asked.desired
        assert held is not None and held.actor == "risk:max_daily_loss"  # still held
