"""The trader under an ownership lease: checked before every exchange call, and its fence
claimed on the grid before the grid is read."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.domain import OrderRequest
from quantmesh.errors import LockLost

from .support import SETTINGS, SYMBOL, make_exchange, make_repository, running_trader, settle, until


async def test_nothing_is_sent_once_the_ownership_lease_is_invalid(tmp_path: Path) -> None:
    exchange = make_exchange(tmp_path)
    repository = make_repository(tmp_path)
    await repository.start()
    await exchange.start()
    owned = True
    async with running_trader(exchange, repository, owner_valid=lambda: owned) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.open_ids()) == 3)
        owned = False
        exchange.set_price(SYMBOL, Decimal(1975))  # fills a buy, wants more buys and a sell
        await settle()
        exchange.set_price(SYMBOL, Decimal(1940))
        await settle()
        before = len(exchange.engine.all_orders())
        exchange.set_price(SYMBOL, Decimal(1930))
        await settle()
        assert len(exchange.engine.all_orders()) == before
        owned = True
        exchange.set_price(SYMBOL, Decimal(1931))
        await until(lambda: len(exchange.engine.all_orders()) > before)
    await exchange.close()
    await repository.close()


async def test_a_trader_with_an_older_fence_cannot_start(tmp_path: Path) -> None:
    exchange = make_exchange(tmp_path)
    repository = make_repository(tmp_path)
    await repository.start()
    await exchange.start()
    async with running_trader(exchange, repository, fence=lambda: 200) as first:
        assert first.trader.trading  # started: its fence is on the grid
    with pytest.raises(LockLost):
        async with running_trader(exchange, repository, fence=lambda: 100) as late:
            raise AssertionError(f"an older fence started trading: {late.trader.symbol}")
    grid = await repository.load_grid(SYMBOL)
    assert grid is not None and grid.fence == 200
    await exchange.close()
    await repository.close()


async def test_a_newer_owner_fences_out_the_former_owners_writes(tmp_path: Path) -> None:
    exchange = make_exchange(tmp_path)
    repository = make_repository(tmp_path)
    await repository.start()
    await exchange.start()
    with pytest.raises(BaseExceptionGroup) as caught:
        async with running_trader(exchange, repository, fence=lambda: 100, crash=True) as old:
            exchange.set_price(SYMBOL, Decimal(2001))
            await until(lambda: len(old.open_ids()) == 3)
            # a new owner starts on the same grid (the old one, frozen, still runs)
            assert await repository.save_levels(SYMBOL, [], 300)
            exchange.set_price(SYMBOL, Decimal(1985))  # a fill: the old owner's write is refused
            await until(lambda: old.task.done())
            assert old.trader.stopped
    assert caught.group_contains(LockLost)
    grid = await repository.load_grid(SYMBOL)
    assert grid is not None and grid.fence == 300 and not grid.levels  # nothing of the old one
    await exchange.close()
    await repository.close()


async def test_a_stale_buy_from_a_former_owner_is_cancelled_not_adopted(
    tmp_path: Path,
) -> None:
    exchange = make_exchange(tmp_path)
    repository = make_repository(tmp_path)
    await repository.start()
    await exchange.start()
    settings = replace(SETTINGS, reconcile_interval=0.2)  # the resync finds it
    async with running_trader(exchange, repository, settings=settings) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        exchange.set_price(SYMBOL, Decimal(1999))  # B0.0 fills: level 0 is on cycle 1
        await until(lambda: any(o.side == "sell" for o in exchange.engine.open_orders(SYMBOL)))
        [first] = [o for o in exchange.engine.all_orders() if o.client_order_id.endswith("B0.0")]
        # a former owner, frozen while sending B0.0, thaws: the copy lands now
        stale = await exchange.create_order(
            OrderRequest(SYMBOL, "buy", Decimal(1990), Decimal("0.015"), first.client_order_id)
        )

        def status() -> str:
            [order] = [
                o
                for o in exchange.engine.all_orders()
                if o.exchange_order_id == stale.exchange_order_id
            ]
            return order.status

        await until(lambda: status() != "open")
        assert status() == "canceled"
        assert run.metric("quantmesh_orders_cancelled_total", symbol=SYMBOL, reason="stale") == 1
        assert stale.client_order_id not in run.tracked_ids()
    grid = await repository.load_grid(SYMBOL)
    assert grid is not None and grid.level(0).holding == Decimal("0.015")  # bought once
    await exchange.close()
    await repository.close()


async def test_a_lone_instance_takes_a_fence_above_a_stored_one(tmp_path: Path) -> None:
    """A clock stepped back, or a grid a fleet traded before: one instance still starts."""
    exchange = make_exchange(tmp_path)
    repository = make_repository(tmp_path)
    await repository.start()
    await exchange.start()
    async with running_trader(exchange, repository, fence=lambda: 500) as fleet_run:
        assert fleet_run.trader.trading  # a grid left at fence 500
    async with running_trader(exchange, repository, fence=lambda: 100, exclusive=True) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.open_ids()) == 3)
    grid = await repository.load_grid(SYMBOL)
    assert grid is not None and grid.fence == 501
    await exchange.close()
    await repository.close()


async def test_overlapping_quiesce_calls_wait_for_one_acquisition(tmp_path: Path) -> None:
    exchange = make_exchange(tmp_path)
    repository = make_repository(tmp_path)
    await repository.start()
    await exchange.start()
    async with running_trader(exchange, repository) as run:
        await asyncio.wait_for(run.trader.quiesce(), 2)
        await asyncio.wait_for(run.trader.quiesce(), 2)  # a second caller does not block
    await exchange.close()
    await repository.close()
