"""A real trader on a real simulated exchange and a real SQLite repository."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from quantmesh.domain import MarketRules, Order, OrderRequest, OrderUpdate
from quantmesh.errors import Disconnected, LockError, LockUnavailable, RateLimited
from quantmesh.exchange.sim.simulated import SimMarket, SimulatedExchange
from quantmesh.grid.state import GridParams
from quantmesh.lock.base import Lease
from quantmesh.lock.keys import LockKeys
from quantmesh.lock.local import LocalLock
from quantmesh.lock.metered import MeteredLock
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.engine import create_engine_for, to_sqlalchemy_url
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.trader import Trader, TraderSettings

SYMBOL = "ETH/USDT"
RULES = MarketRules(
    SYMBOL, "ETH", "USDT", Decimal("0.01"), Decimal("0.0001"), Decimal("0.0001"), Decimal(5)
)
FEE = Decimal("0.001")
SETTINGS = TraderSettings(
    grid=GridParams(
        symbol=SYMBOL,
        interval=Decimal(10),
        order_quantity=Decimal(30),
        buy_window=3,
        sell_window=3,
        min_order_value=Decimal(10),
        anchor_price=Decimal(2000),
        cancel_hysteresis=1,
    ),
    price_save_interval=0.0,
)


_T = TypeVar("_T")


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def stored(
    read: Callable[[], Awaitable[_T]], ok: Callable[[_T], bool], timeout: float = 5.0
) -> _T:
    """What ``read()`` returns once ``ok`` holds for it: the database is written behind the
    trader's back, a few milliseconds after the trader acted."""
    deadline = time.monotonic() + timeout
    while not ok(found := await read()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not stored in time; the database holds {found!r}")
        await asyncio.sleep(0.005)
    return found


async def settle() -> None:
    """Let the trader's tasks process what is queued."""
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)


def make_exchange(path: Path, balances: dict[str, Decimal] | None = None) -> SimulatedExchange:
    return SimulatedExchange(
        {SYMBOL: SimMarket(RULES, Decimal(2000))},
        balances if balances is not None else {"USDT": Decimal(100000)},
        FEE,
        path / "sim.db",
    )


def make_repository(path: Path) -> SqlRepository:
    url = to_sqlalchemy_url("sqlite", str(path / "quantmesh.db"))
    return SqlRepository(create_engine_for("sqlite", url), "simulated")


@dataclass
class Running:
    exchange: Any
    repository: SqlRepository
    trader: Trader
    metrics: Metrics
    task: asyncio.Task[None]

    def open_ids(self) -> set[str]:
        """Open orders on the exchange."""
        return {o.client_order_id for o in self.exchange.engine.open_orders(SYMBOL)}

    def tracked_ids(self) -> set[str]:
        """Open orders as the trader knows them (recorded)."""
        assert self.trader.book is not None
        return {o.client_order_id for o in self.trader.book.open_orders()}

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@asynccontextmanager
async def running_trader(
    exchange: Any,
    repository: SqlRepository,
    *,
    locker: Any = None,
    settings: TraderSettings = SETTINGS,
    crash: bool = False,
    fence: Callable[[], int] = lambda: 0,
    exclusive: bool = False,
    owner_valid: Callable[[], bool] = lambda: True,
    owner_deadline: Callable[[], float] = lambda: math.inf,
) -> AsyncIterator[Running]:
    """Run a trader until the block ends, then shut it down as the service does.

    With ``crash``, the trader is cancelled wherever it is instead (a killed process).
    """
    metrics = Metrics()
    backend = locker if locker is not None else NopLock()
    trader = Trader(
        settings,
        exchange=exchange,
        repository=repository,
        locker=MeteredLock(backend, metrics=metrics, purpose="order"),
        reconcile_locker=MeteredLock(backend, metrics=metrics, purpose="reconcile"),
        lock_keys=LockKeys("simulated"),
        metrics=metrics,
        fence=fence,
        exclusive=exclusive,
        owner_valid=owner_valid,
        owner_deadline=owner_deadline,
    )
    task = asyncio.create_task(trader.run())
    try:
        await until(lambda: trader.ready.is_set() or task.done())
        if task.done():
            task.result()
        yield Running(exchange, repository, trader, metrics, task)
    finally:
        if not crash:
            await asyncio.wait_for(trader.quiesce(), 5)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


@dataclass
class RefusingLock:
    """Every level is held by somebody else."""

    calls: int = 0

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        self.calls += 1
        return None

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        raise LockUnavailable("held")

    async def unlock(self, lease: Lease) -> bool:
        return True

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class BrokenLock(RefusingLock):
    """The lock backend cannot be reached."""

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        self.calls += 1
        raise LockUnavailable("connection refused")


@dataclass
class ExpiredLock(RefusingLock):
    """Grants leases that are already past their deadline (a pause longer than the TTL)."""

    released: list[str] = field(default_factory=list)

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        self.calls += 1
        return Lease(key, "t", self.calls, -math.inf)

    async def unlock(self, lease: Lease) -> bool:
        self.released.append(lease.key)
        return False


class LossyExchange:
    """Places the order, then reports a network error, for the first ``failures`` calls."""

    def __init__(self, inner: SimulatedExchange, failures: int) -> None:
        self._inner = inner
        self.failures = failures
        self.create_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def create_order(self, request: OrderRequest) -> Order:
        self.create_calls += 1
        order = await self._inner.create_order(request)
        if self.failures > 0:
            self.failures -= 1
            raise Disconnected("read timed out")
        return order


class RateLimitedExchange(LossyExchange):
    """Answers every order with a rate-limit error asking to wait ``retry_after`` seconds."""

    def __init__(self, inner: SimulatedExchange, retry_after: float) -> None:
        super().__init__(inner, failures=0)
        self.retry_after = retry_after

    async def create_order(self, request: OrderRequest) -> Order:
        self.create_calls += 1
        raise RateLimited("too many requests", retry_after=self.retry_after)


class MutableStreamExchange(LossyExchange):
    """Order updates reach the trader only while ``silent`` is false (a lagging stream)."""

    def __init__(self, inner: SimulatedExchange) -> None:
        super().__init__(inner, failures=0)
        self.silent = False

    async def watch_orders(self, symbol: str) -> AsyncIterator[OrderUpdate]:
        async for update in self._inner.watch_orders(symbol):
            if not self.silent:
                yield update


class GateLock(NopLock):
    """Grants leases only while ``open`` is true."""

    def __init__(self) -> None:
        super().__init__()
        self.open = True

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        return await super().try_lock(key, ttl) if self.open else None


class SlowAnswers(LossyExchange):
    """The exchange acts at once, but its answers take ``delay`` seconds to arrive."""

    def __init__(self, inner: SimulatedExchange, delay: float) -> None:
        super().__init__(inner, failures=0)
        self.delay = delay

    async def create_order(self, request: OrderRequest) -> Order:
        self.create_calls += 1
        order = await self._inner.create_order(request)
        await asyncio.sleep(self.delay)
        return order

    async def cancel_order(
        self, symbol: str, client_order_id: str, expires_at: float | None = None
    ) -> Order:
        order = await self._inner.cancel_order(symbol, client_order_id, expires_at)
        await asyncio.sleep(self.delay)
        return order


@dataclass
class FailingLock(RefusingLock):
    """The lock backend answers with an error that is not a connectivity problem."""

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        self.calls += 1
        raise LockError("ERR unexpected reply")


class RecordingLock(LocalLock):
    """A real in-process lock that remembers every lease it granted."""

    def __init__(self) -> None:
        super().__init__()
        self.granted: list[Lease] = []

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        lease = await super().try_lock(key, ttl)
        if lease is not None:
            self.granted.append(lease)
        return lease
