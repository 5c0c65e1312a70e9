"""Risk exits of a trader on the simulated exchange: a trigger holds the symbol at once
(halt: every order cancelled, nothing placed; stop_buys: sells only), is recorded once as
desired state, holds while the record fails, and a person's resume trades again without the
still-crossed trigger firing at once; a hold read back from the database keeps it quiet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from decimal import Decimal

from quantmesh.control.desired import ACTIVE, Desired
from quantmesh.errors import StorageError
from quantmesh.exchange.sim.simulated import SimulatedExchange
from quantmesh.grid.pnl import position
from quantmesh.grid.risk import Fired, RiskLimits
from quantmesh.lock.keys import LockKeys
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.peaks import SqlPeakStore
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.risk import RiskGuard, hold_of
from quantmesh.trading.trader import Trader

from .support import SETTINGS, SYMBOL, until
from .test_control import Asked, open_sides, tick, ticking_until


class Board:
    """Stands in for the control board: stores a hold as the desired state it reads back."""

    def __init__(self, asked: Asked, failures: int = 0) -> None:
        self.asked = asked
        self.failures = failures
        self.recorded: list[Fired] = []

    async def __call__(self, fired: Fired) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageError("database unreachable")
        self.recorded.append(fired)
        self.asked.desired = hold_of(fired, time.time())


@asynccontextmanager
async def trading(
    exchange: SimulatedExchange,
    repository: SqlRepository,
    limits: RiskLimits,
    board: Board,
    metrics: Metrics,
    peaks: SqlPeakStore | None = None,
) -> AsyncIterator[Trader]:
    trader = Trader(
        replace(SETTINGS, risk=limits),
        exchange=exchange,
        repository=repository,
        locker=NopLock(),
        lock_keys=LockKeys("simulated"),
        metrics=metrics,
        control=board.asked,
        risk_record=board,
        risk_peaks=peaks,
    )
    task = asyncio.create_task(trader.run())
    try:
        await until(trader.ready.is_set)
        yield trader
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def triggered(metrics: Metrics, trigger: str, action: str) -> float | None:
    labels = {"symbol": SYMBOL, "trigger": trigger, "action": action}
    return metrics.registry.get_sample_value("quantmesh_risk_triggered", labels)


async def test_a_stop_loss_halts_once_and_a_resume_trades_again(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    board, metrics = Board(Asked(ACTIVE)), Metrics()
    async with trading(
        exchange, repository, RiskLimits(stop_loss_price=Decimal(1985)), board, metrics
    ) as trader:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(exchange.engine.open_orders(SYMBOL)) == 3)
        await ticking_until(exchange, "1984", lambda: open_sides(exchange) == [])
        assert [f.trigger for f in board.recorded] == ["stop_loss"]
        assert board.recorded[0].reason == "risk stop_loss (price 1984, stop_loss_price 1985): halt"
        assert trader.control is not None and trader.control.actor == "risk:stop_loss"
        placed = len(exchange.engine.all_orders())
        for price in ("1980", "1990", "1970"):
            await tick(exchange, price)
        assert len(exchange.engine.all_orders()) == placed and len(board.recorded) == 1
        assert triggered(metrics, "stop_loss", "halt") == 1

        board.asked.desired = Desired("active", actor="ops", at=time.time())  # ctl resume
        await ticking_until(exchange, "1970", lambda: len(exchange.engine.open_orders(SYMBOL)) > 0)
        assert len(board.recorded) == 1  # still below the stop: no refire until it came back
        assert triggered(metrics, "stop_loss", "halt") == 0
        await tick(exchange, "1990")
        await ticking_until(exchange, "1984", lambda: len(board.recorded) == 2)


async def test_stop_buys_keeps_the_sells_of_held_inventory(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    board = Board(Asked(ACTIVE))
    limits = RiskLimits(stop_loss_price=Decimal(1975), actions={"stop_loss": "stop_buys"})
    async with trading(exchange, repository, limits, board, Metrics()):
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(exchange.engine.open_orders(SYMBOL)) == 3)
        await ticking_until(exchange, "1989", lambda: ("sell", "2000.00") in open_sides(exchange))
        await ticking_until(exchange, "1974", lambda: board.recorded != [])
        await ticking_until(
            exchange, "1974", lambda: all(s == "sell" for s, _ in open_sides(exchange))
        )
        assert ("sell", "2000.00") in open_sides(exchange)
        assert board.asked.desired is not None and board.asked.desired.mode == "stop_buys"


async def test_a_hold_the_database_refused_stays_in_force_until_stored(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    board = Board(Asked(ACTIVE), failures=2)
    limits = RiskLimits(max_loss=Decimal("0.001"))  # any loss at all
    metrics = Metrics()
    guard = RiskGuard(
        SYMBOL, limits, metrics=metrics, record=board, wall_clock=time.time, retry=0.01
    )
    held = position([], {}, Decimal(2000))
    guard.check(Decimal(2000), lambda: held, Decimal("-0.5"), Decimal(30), ACTIVE)
    assert guard.effective(ACTIVE) is not None and guard.effective(ACTIVE).mode == "paused"  # type: ignore[union-attr]
    await until(lambda: board.recorded != [])
    assert board.failures == 0 and len(board.recorded) == 1
    stored = board.asked.desired
    assert guard.effective(stored) == stored and guard.hold is None  # read back: the board's
    # a hold read back (here, or by the next owner) keeps the watch quiet
    guard.check(Decimal(2000), lambda: held, Decimal(-5), Decimal(30), stored)
    assert len(board.recorded) == 1 and triggered(metrics, "max_loss", "halt") == 1
    await guard.close()


async def test_a_hold_found_at_start_is_followed_and_not_recorded_again(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    """A new owner reads the hold a former owner's trigger stored: it places nothing and
    records nothing, whatever the price."""
    fired = Fired("stop_loss", "halt", (("price", "1984"), ("stop_loss_price", "1985")))
    board = Board(Asked(hold_of(fired, time.time())))
    metrics = Metrics()
    async with trading(
        exchange, repository, RiskLimits(stop_loss_price=Decimal(1985)), board, metrics
    ):
        for price in ("2001", "1984", "1970"):
            await tick(exchange, price)
        assert exchange.engine.all_orders() == [] and board.recorded == []
        assert triggered(metrics, "stop_loss", "halt") == 1


async def test_the_drawdown_peak_survives_a_restart(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    """Equity peaks at 2009, the trader stops, the price falls to 1985 meanwhile: the next
    trader measures the drawdown from the stored peak (without it, from where it starts)."""
    peaks = SqlPeakStore(repository.runner, "simulated")
    wide = RiskLimits(max_drawdown=Decimal(1))
    async with trading(exchange, repository, wide, Board(Asked(ACTIVE)), Metrics(), peaks):
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(exchange.engine.open_orders(SYMBOL)) == 3)
        await ticking_until(exchange, "1985", lambda: ("sell", "2000.00") in open_sides(exchange))
        await ticking_until(
            exchange, "2009", lambda: ("sell", "2000.00") not in open_sides(exchange)
        )
        await tick(exchange, "2009")
    stored = await peaks.load_peak(SYMBOL)
    assert stored is not None and stored[0] > Decimal("0.19")  # round trip + the held level
    exchange.set_price(SYMBOL, Decimal(1985))  # equity now about 0.36 below that peak

    tight = RiskLimits(max_drawdown=Decimal("0.3"))
    forgetful = Board(Asked(ACTIVE))
    async with trading(exchange, repository, tight, forgetful, Metrics()):
        for _ in range(3):
            await tick(exchange, "1985")
    assert forgetful.recorded == []  # a peak started again at 1985: no drawdown seen

    board = Board(Asked(ACTIVE))
    async with trading(exchange, repository, tight, board, Metrics(), peaks):
        await ticking_until(exchange, "1985", lambda: board.recorded != [])
    assert board.recorded[0].trigger == "max_drawdown"
    assert dict(board.recorded[0].values)["peak"] == f"{stored[0].normalize():f}"
