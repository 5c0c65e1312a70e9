"""A symbol moved between two instances of a fleet by reloading both: instance a's file
loses ETH/USDT, b's gains it. Whichever reloads first, the ownership lease keeps the
symbol on one instance at a time, and b trades it soon after the second reload."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from quantmesh.coordination.coordinator import Coordinator, member_of
from quantmesh.observability.metrics import Metrics
from tests.servers.redis import RedisServer
from tests.trading.support import until

from .support import CHECK, TTL, Instance, Instances, instance

ETH, BTC, SOL = "ETH/USDT", "BTC/USDT", "SOL/USDT"
START = 3.0  # a trader's start-up: the grid loaded, reconciled with the exchange


class Watch:
    """Samples what both instances trade every few ms; counts the samples in which both
    trade ``symbol``."""

    def __init__(self, a: Instance, b: Instance, symbol: str) -> None:
        self.a, self.b, self.symbol = a, b, symbol
        self.samples = 0
        self.both = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.samples += 1
            if self.symbol in self.a.trading() and self.symbol in self.b.trading():
                self.both += 1
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("redis")
@pytest.mark.parametrize("first", ["a", "b"], ids=["giver_first", "taker_first"])
async def test_a_symbol_moves_between_instances_by_reloading_both(
    instances: Instances, redis_server: RedisServer, first: str
) -> None:
    a = instances.start("a", redis_server.port, (ETH, BTC))
    await until(lambda: a.trading() == {ETH, BTC}, timeout=10)
    b = instances.start("b", redis_server.port, (SOL,), markets=(ETH,))
    await until(lambda: b.trading() == {SOL}, timeout=10)

    watch = Watch(a, b, ETH)
    try:
        reloads = {"a": lambda: a.reload((BTC,)), "b": lambda: b.reload((SOL, ETH))}
        second = "b" if first == "a" else "a"
        report = await reloads[first]()
        assert report.ok, report
        await asyncio.sleep(3 * CHECK)  # b waiting for the lease, or a already gone
        report = await reloads[second]()
        assert report.ok, report
        reloaded = time.monotonic()
        await until(lambda: ETH in b.trading(), timeout=TTL + CHECK + START)
        took = time.monotonic() - reloaded
        await asyncio.sleep(3 * CHECK)  # and it stays there
    finally:
        await watch.stop()

    assert watch.both == 0, f"both traded {ETH} in {watch.both} of {watch.samples} samples"
    assert watch.samples > 100
    assert took <= TTL + CHECK + START, took
    assert a.trading() == {BTC} and b.trading() == {SOL, ETH}
    assert a.coordinator.status()["wanted"] == [BTC]
    assert b.coordinator.status()["wanted"] == [ETH, SOL]
    # the other member sees the move in b's membership entry
    await until(lambda: any(ETH in m.symbols for m in a.coordinator.members if m.id == "b"))
    assert b.sample("quantmesh_failovers_total", symbol=ETH) == 0  # a hand-over


def test_configure_changes_what_an_instance_alone_wants() -> None:
    coordinator = Coordinator(member_of("a", "master", (ETH, BTC)), metrics=Metrics())
    coordinator.drop(ETH)  # failed here for good
    coordinator.configure((BTC, SOL))
    assert not coordinator.wants(ETH) and coordinator.wants(SOL) and coordinator.wants(BTC)
    coordinator.configure((BTC, SOL, ETH))  # configured again: claimed again
    assert coordinator.wants(ETH)
    assert coordinator.status()["wanted"] == [BTC, ETH, SOL]


def test_retry_lists_and_wants_a_failed_symbol_again() -> None:
    coordinator = Coordinator(member_of("a", "master", (ETH, BTC)), metrics=Metrics())
    coordinator.drop(ETH)
    assert not coordinator.wants(ETH)
    coordinator.retry(ETH)
    assert coordinator.wants(ETH) and coordinator.status()["wanted"] == [BTC, ETH]
    coordinator.retry(SOL)  # never failed here: nothing changes
    assert not coordinator.wants(SOL)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("redis")
@pytest.mark.parametrize("when", ["after", "during"], ids=["released", "as_released"])
async def test_a_symbol_that_failed_for_good_is_claimed_again_when_retuned(
    instances: Instances, redis_server: RedisServer, tmp_path: Path, when: str
) -> None:
    """In a fleet too: new settings for a symbol that failed here for good start it again
    under its ownership lease, listed in the membership entry again - also when they come
    while the failed symbol's lease is still being released."""
    a = instance(tmp_path, "a", redis_server.port, (ETH, SOL))
    instances.started.append(a)
    finer_than_tick = replace(a.service.symbols[1].grid, interval=Decimal("0.001"))
    a.service.symbols[1] = replace(a.service.symbols[1], grid=finer_than_tick)
    releasing, gate = asyncio.Event(), asyncio.Event()
    records = a.coordinator._records
    assert records is not None
    record = records.write

    async def held_open(symbol: str, state: str, fence: int, since: float) -> Any:
        if symbol == SOL and state == "released" and when == "during" and not gate.is_set():
            releasing.set()
            await gate.wait()
        return await record(symbol, state, fence, since)

    records.write = held_open  # type: ignore[method-assign]
    a.start()
    await until(lambda: SOL in a.service.result.failed, timeout=10)
    if when == "during":
        await asyncio.wait_for(releasing.wait(), 10)  # released only after the reload
    assert "finer than the market's price tick" in a.service.result.failed[SOL]
    await until(lambda: ETH in a.trading(), timeout=10)
    assert a.coordinator.status()["wanted"] == [ETH]

    assert a.config is not None
    text = a.config.read_text()
    a.config.write_text(
        text.replace(
            "{symbol: SOL/USDT, price_interval: 10", "{symbol: SOL/USDT, price_interval: 20"
        )
    )
    report = await a.service.reload()
    gate.set()
    assert report.ok and report.changes == ("SOL/USDT: price_interval 10 -> 20",), report
    await until(lambda: a.trading() == {ETH, SOL}, timeout=TTL + CHECK + START)
    assert SOL not in a.service.result.failed
    assert a.coordinator.status()["wanted"] == [ETH, SOL]
    assert SOL in a.coordinator.owned
