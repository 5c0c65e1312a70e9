"""The trader against the real simulated exchange and a real SQLite repository."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
import structlog.testing

from quantmesh.domain import Order, OrderRequest
from quantmesh.errors import Disconnected, StartupError
from quantmesh.exchange.sim.simulated import SimulatedExchange
from quantmesh.grid.ids import client_order_id
from quantmesh.grid.state import GridShape
from quantmesh.storage.base import TradeFilter
from quantmesh.storage.repository import SqlRepository

from .support import (
    SETTINGS,
    SYMBOL,
    BrokenLock,
    ExpiredLock,
    FailingLock,
    GateLock,
    LossyExchange,
    MutableStreamExchange,
    RateLimitedExchange,
    RecordingLock,
    RefusingLock,
    make_exchange,
    running_trader,
    settle,
    stored,
    until,
)


async def test_places_the_buy_window_below_the_price_with_deterministic_ids(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    async with running_trader(exchange, repository) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        tag = run.trader.book.tag  # type: ignore[union-attr]
        assert run.open_ids() == {client_order_id(tag, i, "buy", 0) for i in (0, -1, -2)}
        prices = sorted(o.price for o in exchange.engine.open_orders(SYMBOL))
        assert prices == [Decimal(1980), Decimal(1990), Decimal(2000)]
        await stored(  # fails unless the database records exactly the open orders
            lambda: repository.get_open_orders(SYMBOL),
            lambda orders: {o.client_order_id for o in orders} == run.open_ids(),
        )
        assert run.metric("quantmesh_orders_placed_total", symbol=SYMBOL, side="buy") == 3
        # More ticks at the same price place nothing new.
        for _ in range(5):
            exchange.set_price(SYMBOL, Decimal(2001))
        await settle()
        assert len(exchange.engine.all_orders()) == 3


async def test_a_fill_becomes_a_sell_one_level_up_and_a_round_trip_with_pnl(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    async with running_trader(exchange, repository) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        exchange.set_price(SYMBOL, Decimal(1999))  # fills the buy at 2000
        await until(lambda: any(o.side == "sell" for o in exchange.engine.open_orders(SYMBOL)))
        [sell] = [o for o in exchange.engine.open_orders(SYMBOL) if o.side == "sell"]
        assert sell.price == Decimal(2010)
        assert sell.amount == Decimal("0.0150")  # 30 USDT / 2000, floored to the lot
        exchange.set_price(SYMBOL, Decimal(2011))  # fills the sell
        await until(lambda: run.metric("quantmesh_round_trips_total", symbol=SYMBOL) == 1)

    [trip] = await repository.get_round_trips(SYMBOL)
    buy_cost = Decimal(2000) * Decimal("0.015") * (1 + Decimal("0.001"))
    proceeds = Decimal(2010) * Decimal("0.015") * (1 - Decimal("0.001"))
    assert (trip.level, trip.cycle, trip.amount) == (0, 1, Decimal("0.015"))
    assert trip.buy_cost == buy_cost
    assert trip.sell_proceeds == proceeds
    assert trip.pnl == proceeds - buy_cost
    trades = await repository.get_trades(TradeFilter(symbol=SYMBOL))
    assert [t.side for t in trades] == ["buy", "sell"]
    grid = await repository.load_grid(SYMBOL)
    assert grid is not None
    assert grid.level(0).holding == 0 and grid.level(0).cycle == 1


async def test_a_restart_resumes_the_grid_and_adopts_open_orders(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    async with running_trader(exchange, repository) as first:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(first.tracked_ids()) == 3)
        anchor = first.trader.book.state.anchor  # type: ignore[union-attr]
    placed = len(exchange.engine.all_orders())

    # The stored anchor wins.
    changed = replace(SETTINGS, grid=replace(SETTINGS.grid, anchor_price=Decimal(1234)))
    async with running_trader(exchange, repository, settings=changed) as second:
        assert second.trader.book.state.anchor == anchor  # type: ignore[union-attr]
        assert {o.client_order_id for o in second.trader.book.open_orders()} == first.open_ids()  # type: ignore[union-attr]
        exchange.set_price(SYMBOL, Decimal(2001))
        await settle()
    assert len(exchange.engine.all_orders()) == placed


async def test_fills_that_happen_while_stopped_are_settled_on_restart(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    async with running_trader(exchange, repository) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
    exchange.set_price(SYMBOL, Decimal(1985))  # fills 2000 and 1990 while nobody listens

    async with running_trader(exchange, repository) as run:
        await settle()
        levels = run.trader.book.state  # type: ignore[union-attr]
        assert levels.level(0).holding == Decimal("0.015")
        assert levels.level(-1).holding == Decimal("0.0150")
        assert levels.level(0).cycle == 1 and levels.level(-1).cycle == 1
    trades = await repository.get_trades(TradeFilter(symbol=SYMBOL))
    assert len(trades) == 2
    # A third start does not count the same fills again.
    async with running_trader(exchange, repository) as run:
        await settle()
        assert run.trader.book.state.level(0).holding == Decimal("0.015")  # type: ignore[union-attr]
    assert len(await repository.get_trades(TradeFilter(symbol=SYMBOL))) == 2


async def test_a_level_held_by_another_instance_is_skipped(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    locker = RefusingLock()
    async with running_trader(exchange, repository, locker=locker) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: locker.calls >= 3)
        await settle()
        label = "order:simulated:ETHUSDT"
        assert run.metric("quantmesh_lock_conflict_total", key=label, purpose="order") >= 3
        assert (
            run.metric(
                "quantmesh_lock_acquire_total", key=label, status="conflict", purpose="order"
            )
            >= 3
        )
    assert exchange.engine.all_orders() == []


@pytest.mark.parametrize(
    ("locker", "status"),
    [(BrokenLock(), "unavailable"), (FailingLock(), "error")],
    ids=["unreachable", "error-reply"],
)
async def test_a_failing_lock_backend_places_nothing(
    exchange: SimulatedExchange, repository: SqlRepository, locker: RefusingLock, status: str
) -> None:
    async with running_trader(exchange, repository, locker=locker) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: locker.calls >= 3)
        await settle()
        label = "order:simulated:ETHUSDT"
        assert (
            run.metric("quantmesh_lock_acquire_total", key=label, status=status, purpose="order")
            >= 3
        )
    assert exchange.engine.all_orders() == []


async def test_a_lock_backend_that_keeps_failing_is_logged_once_per_interval(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    locker = BrokenLock()
    with structlog.testing.capture_logs() as logs:
        async with running_trader(exchange, repository, locker=locker):
            for step in range(10):
                exchange.set_price(SYMBOL, Decimal(2001 + step))
                await settle()
            await until(lambda: locker.calls >= 30)
    warned = [e for e in logs if e["event"] == "lock_unavailable"]
    assert len(warned) == 1  # not one per level and tick
    assert exchange.engine.all_orders() == []


async def test_orders_are_stored_with_the_fence_of_their_level_lock(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    locker = RecordingLock()
    async with running_trader(exchange, repository, locker=locker) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        label = "order:simulated:ETHUSDT"
        assert (
            run.metric("quantmesh_lock_acquire_total", key=label, status="success", purpose="order")
            == 3
        )
        assert (
            run.metric("quantmesh_lock_hold_duration_seconds_count", key=label, purpose="order")
            == 3
        )
    stored = await repository.get_open_orders(SYMBOL)
    assert sorted(o.lock_fence or 0 for o in stored) == sorted(g.fence for g in locker.granted)
    by_key = {g.key: g.fence for g in locker.granted}
    assert set(by_key) == {f"{{order:simulated:ETHUSDT}}:{i}" for i in (0, -1, -2)}


async def test_a_lease_past_its_deadline_sends_nothing_and_is_released(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    locker = ExpiredLock()
    async with running_trader(exchange, repository, locker=locker):
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(locker.released) >= 3)
    assert exchange.engine.all_orders() == []
    assert locker.released[:3] == [f"{{order:simulated:ETHUSDT}}:{i}" for i in (0, -1, -2)]


async def test_an_unknown_outcome_is_looked_up_not_placed_again(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    lossy = LossyExchange(exchange, failures=3)
    async with running_trader(lossy, repository) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: lossy.create_calls >= 3)
        for _ in range(5):
            exchange.set_price(SYMBOL, Decimal(2001))
            await settle()
        # The three orders exist once each and the trader knows them as open.
        assert len(exchange.engine.all_orders()) == 3
        await until(lambda: len(run.trader.book.unknown_ids()) == 0)  # type: ignore[union-attr]
        assert {o.client_order_id for o in run.trader.book.open_orders()} == run.open_ids()  # type: ignore[union-attr]
    assert lossy.create_calls == 3


class _BlindExchange(LossyExchange):
    """Creates whose answers are lost, and lookups that fail while ``blind``."""

    def __init__(self, inner: SimulatedExchange, failures: int) -> None:
        super().__init__(inner, failures)
        self.blind = True
        self.cancelled: list[str] = []

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order:
        if self.blind:
            raise Disconnected("read timed out")
        return await self._inner.fetch_order(symbol, client_order_id)

    async def cancel_order(
        self, symbol: str, client_order_id: str, expires_at: float | None = None
    ) -> Order:
        self.cancelled.append(client_order_id)
        return await self._inner.cancel_order(symbol, client_order_id, expires_at)


async def test_an_order_being_looked_up_is_not_cancelled_until_its_lookup_settles_it(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    blind = _BlindExchange(exchange, failures=3)
    settings = replace(SETTINGS, lookup_interval=0.0)  # a lookup at every price
    async with running_trader(blind, repository, settings=settings) as run:
        book = run.trader.book
        assert book is not None
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(book.unknown_ids()) == 3)
        below = {client_order_id(book.tag, i, "buy", 0) for i in (-1, -2)}
        for _ in range(5):  # 1990 and 1980 are outside the window here: the plan cancels them
            exchange.set_price(SYMBOL, Decimal(2031))
            await settle()
        assert blind.cancelled == []
        assert below <= {o.client_order_id for o in exchange.engine.open_orders(SYMBOL)}
        blind.blind = False  # the lookup finds them open; then each is cancelled, once
        exchange.set_price(SYMBOL, Decimal(2031))
        await until(
            lambda: not below & {o.client_order_id for o in exchange.engine.open_orders(SYMBOL)}
        )
        for _ in range(3):
            exchange.set_price(SYMBOL, Decimal(2031))
            await settle()
        assert sorted(blind.cancelled) == sorted(below)


async def test_an_order_already_on_the_exchange_is_adopted_not_duplicated(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    async with running_trader(exchange, repository) as run:
        tag = run.trader.book.tag  # type: ignore[union-attr]
        # Another instance placed level -1's buy between our reconcile and our first tick.
        cid = client_order_id(tag, -1, "buy", 0)
        await exchange.create_order(
            OrderRequest(SYMBOL, "buy", Decimal(1990), Decimal("0.0150"), cid)
        )
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        await settle()
        assert cid in {o.client_order_id for o in run.trader.book.open_orders()}  # type: ignore[union-attr]
        duplicates = run.metric(
            "quantmesh_orders_rejected_total", symbol=SYMBOL, reason="duplicate"
        )
        assert duplicates == 1  # counted: something else placed this grid's order
    assert len(exchange.engine.all_orders()) == 3


async def test_a_rejected_order_is_counted_and_not_retried_on_every_tick(
    tmp_path: Path, repository: SqlRepository
) -> None:
    poor = make_exchange(tmp_path, balances={"USDT": Decimal(35)})  # enough for one buy
    await poor.start()
    try:
        async with running_trader(poor, repository) as run:
            for _ in range(10):
                poor.set_price(SYMBOL, Decimal(2001))
                await settle()
            rejected = run.metric(
                "quantmesh_orders_rejected_total", symbol=SYMBOL, reason="insufficient_funds"
            )
            assert rejected == 2  # levels -1 and -2, once each despite ten ticks
            assert len(run.open_ids()) == 1
    finally:
        await poor.close()


async def test_orders_far_below_the_window_are_cancelled_with_hysteresis(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    async with running_trader(exchange, repository) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        exchange.set_price(SYMBOL, Decimal(2011))  # one level up: inside the band
        await until(lambda: len(run.open_ids()) == 4)
        await settle()
        assert len(run.open_ids()) == 4
        exchange.set_price(SYMBOL, Decimal(2031))  # three levels up: 1980 leaves the band
        book = run.trader.book
        assert book is not None
        await until(lambda: client_order_id(book.tag, -2, "buy", 0) not in run.open_ids())
        reason = {"symbol": SYMBOL, "reason": "outside_window"}
        assert run.metric("quantmesh_orders_cancelled_total", **reason) >= 1


async def test_a_rate_limit_pauses_the_symbol_for_the_time_asked(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    limited = RateLimitedExchange(exchange, retry_after=60.0)
    async with running_trader(limited, repository) as run:
        for _ in range(5):
            exchange.set_price(SYMBOL, Decimal(2001))
            await settle()
        assert limited.create_calls == 1
        assert (
            run.metric("quantmesh_exchange_errors_total", symbol=SYMBOL, error="rate_limited") == 1
        )
    assert exchange.engine.all_orders() == []


async def test_buys_beyond_the_position_cap_are_skipped_and_counted(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    # Room for two 30 USDT buys.
    capped = replace(SETTINGS, grid=replace(SETTINGS.grid, max_position=Decimal(65)))
    async with running_trader(exchange, repository, settings=capped) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 2)
        await settle()
        skipped = run.metric("quantmesh_orders_skipped_total", symbol=SYMBOL, reason="position_cap")
        assert skipped >= 1
    assert len(exchange.engine.all_orders()) == 2


async def test_an_order_that_fills_at_once_is_recorded_with_its_fills_and_not_placed_again(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    stream = MutableStreamExchange(exchange)
    gate = GateLock()
    async with running_trader(stream, repository, locker=gate) as run:
        book = run.trader.book
        assert book is not None
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        gate.open = False  # nothing is placed for now; fills are still recorded
        exchange.set_price(SYMBOL, Decimal(1985))  # fills the buys at 2000 and 1990
        await until(lambda: book.state.level(0).cycle == 1 and book.state.level(-1).cycle == 1)
        exchange.set_price(SYMBOL, Decimal(2030))
        await settle()
        # The stream now lags (forever): only call answers tell what happens. The sells
        # (2010 and 2000) are below the price, so each fills as soon as it is placed.
        stream.silent = True
        gate.open = True
        for _ in range(10):
            exchange.set_price(SYMBOL, Decimal(2030))
            await settle()
        await until(lambda: run.metric("quantmesh_round_trips_total", symbol=SYMBOL) == 2)
        assert book.state.level(0).holding == 0 and book.state.level(-1).holding == 0
    sells = [o.client_order_id for o in exchange.engine.all_orders() if o.side == "sell"]
    assert len(sells) == len(set(sells)) == 2
    assert len(await repository.get_round_trips(SYMBOL)) == 2


async def test_a_grid_finer_than_the_price_tick_is_refused(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    # The tick is 0.01.
    fine = replace(SETTINGS, grid=replace(SETTINGS.grid, interval=Decimal("0.005")))
    with pytest.raises(StartupError, match=r"finer than the market's price tick 0\.01"):
        async with running_trader(exchange, repository, settings=fine):
            pytest.fail("the trader started on a grid finer than the tick")
    assert exchange.engine.all_orders() == []
    assert await repository.load_grid(SYMBOL) is None  # nothing stored


async def test_a_new_step_is_refused_while_the_grid_has_open_orders(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    async with running_trader(exchange, repository) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
    wider = replace(SETTINGS, grid=replace(SETTINGS.grid, interval=Decimal(20)))
    with pytest.raises(
        StartupError, match=r"step 10, and the settings now say arithmetic, step 20"
    ):
        async with running_trader(exchange, repository, settings=wider):
            pytest.fail("the trader started with a new step over open orders")
    grid = await repository.load_grid(SYMBOL)
    assert grid is not None and grid.shape == GridShape("arithmetic", Decimal(10))


async def test_a_new_step_is_taken_when_the_grid_holds_nothing(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    async with running_trader(exchange, repository):
        pass  # the grid exists, nothing placed
    wider = replace(SETTINGS, grid=replace(SETTINGS.grid, interval=Decimal(20)))
    async with running_trader(exchange, repository, settings=wider) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        prices = sorted(o.price for o in exchange.engine.open_orders(SYMBOL))
        assert prices == [Decimal(1960), Decimal(1980), Decimal(2000)]
    grid = await repository.load_grid(SYMBOL)
    assert grid is not None and grid.shape == GridShape("arithmetic", Decimal(20))


async def test_an_order_placed_but_never_recorded_is_found_on_restart(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    async with running_trader(exchange, repository) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        tag = run.trader.book.tag  # type: ignore[union-attr]
    # The process placed the next buy and died before recording it; the order then filled.
    lost = client_order_id(tag, -3, "buy", 0)
    await exchange.create_order(OrderRequest(SYMBOL, "buy", Decimal(1970), Decimal("0.0152"), lost))
    exchange.set_price(SYMBOL, Decimal(1965))
    exchange.set_price(SYMBOL, Decimal(1975))  # level -3 is inside the buy window again

    async with running_trader(exchange, repository) as run:
        book = run.trader.book
        assert book is not None
        assert book.state.level(-3).holding == Decimal("0.0152")
        assert book.state.level(-3).cycle == 1
        for _ in range(3):
            exchange.set_price(SYMBOL, Decimal(1975))
            await settle()
    assert [o.client_order_id for o in exchange.engine.all_orders()].count(lost) == 1
    trades = await repository.get_trades(TradeFilter(symbol=SYMBOL, client_order_id=lost))
    assert len(trades) == 1


async def test_an_id_placed_again_is_not_mistaken_for_an_unrecorded_order(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    async with running_trader(exchange, repository) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        cid = client_order_id(run.trader.book.tag, -2, "buy", 0)  # type: ignore[union-attr]
        exchange.set_price(SYMBOL, Decimal(2031))  # 1980 leaves the band: cancelled unfilled
        await until(lambda: cid not in run.open_ids())
        exchange.set_price(SYMBOL, Decimal(2001))  # and placed again under the same id
        await until(lambda: cid in run.tracked_ids())
        exchange.set_price(SYMBOL, Decimal(1979))  # which fills
        await until(lambda: run.trader.book.state.level(-2).cycle == 1)  # type: ignore[union-attr]
    assert [o.client_order_id for o in exchange.engine.all_orders()].count(cid) == 2
    with structlog.testing.capture_logs() as logs:
        async with running_trader(exchange, repository) as run:
            assert run.trader.book.state.level(-2).cycle == 1  # type: ignore[union-attr]
    [reconciled] = [e for e in logs if e["event"] == "reconciled"]
    assert reconciled["unrecorded"] == 0
    assert not [e for e in logs if e["event"] == "unrecorded_order_found"]
