"""Control across a fleet: a request recorded on an instance that does not own the symbol
reaches the owner within a read of the board, and a new owner honours it after a
take-over (in-process instances sharing a real Redis and one control database)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.exchange.sim.simulated import SimulatedExchange
from tests.servers.redis import RedisServer
from tests.trading.support import make_repository, until

from .support import CHECK, TTL, Instances

pytestmark = pytest.mark.usefixtures("redis")
ETH = "ETH/USDT"


async def ticking_until(
    exchange: SimulatedExchange, condition: Callable[[], bool], timeout: float
) -> None:
    """Price ticks (the trader acts on ticks) until ``condition`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        exchange.set_price(ETH, Decimal(2001))
        await asyncio.sleep(0.05)


@pytest.mark.timeout(60)
async def test_a_request_made_elsewhere_reaches_the_owner_and_outlives_its_ownership(
    instances: Instances, redis_server: RedisServer, tmp_path: Path
) -> None:
    shared = make_repository(tmp_path)  # the fleet's database, as far as control goes
    await shared.start()
    try:
        owner = instances.start("a", redis_server.port, controls=shared)
        await until(lambda: owner.trading() == {ETH})
        first: SimulatedExchange = owner.service.exchange  # type: ignore[assignment]
        await ticking_until(first, lambda: bool(first.engine.open_orders(ETH)), 5)

        standby = instances.start("b", redis_server.port, role="standby", controls=shared)
        await until(lambda: standby.coordinator.registered.is_set())
        board = standby.service.controls
        assert board is not None
        await until(lambda: board.known() is not None)
        await board.apply(ETH, "cancel-all", reason="exit", actor="ops")
        assert ETH not in standby.trading()

        # the owner reads it within a check interval and cancels its orders
        await ticking_until(first, lambda: not first.engine.open_orders(ETH), 10 * CHECK + 2)
        trader = owner.service.traders[0]
        assert trader.control is not None and trader.control.mode == "paused"

        await owner.close()  # the standby takes over: what was asked still holds
        await until(lambda: standby.trading() == {ETH}, timeout=TTL + 3)
        second: SimulatedExchange = standby.service.exchange  # type: ignore[assignment]
        for _ in range(20):
            second.set_price(ETH, Decimal(2001))
            await asyncio.sleep(0.05)
        assert second.engine.all_orders() == []

        await board.apply(ETH, "resume", reason="", actor="ops")
        await ticking_until(second, lambda: bool(second.engine.open_orders(ETH)), 5)
    finally:
        await instances.close()
        await shared.close()
