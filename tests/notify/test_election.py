"""The fleet election against a real Redis: one sender per fleet event, whichever
instances see it; the fallback when Redis does not answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from quantmesh.config.notifications import NotificationSettings
from quantmesh.notify.build import build_notifier
from quantmesh.notify.election import RedisElection, smallest_id
from quantmesh.notify.events import lock_halted, symbol_taken_over
from tests.lock.conftest import make_client
from tests.servers.redis import RedisServer
from tests.support import free_port

from .support import Receiver, counted, sample

pytestmark = pytest.mark.timeout(30)
PREFIX = "quantmesh:lock:"


def election(
    client: Redis, instance: str, window: float = 1.0, members: list[str] | None = None
) -> RedisElection:
    return RedisElection(
        client,
        prefix=PREFIX,
        instance=instance,
        window=window,
        fallback=smallest_id(instance, lambda: members or []),
        timeout=1.0,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


async def test_one_instance_wins_each_key_within_the_window(redis: Redis) -> None:
    a, b, c = (election(redis, name, window=0.5) for name in "abc")
    won = await asyncio.gather(*(e.elect("lock_halted") for e in (a, b, c)))
    assert sorted(won) == [False, False, True]
    assert await redis.get(f"{PREFIX}notify:lock_halted") in (b"a", b"b", b"c")
    assert 0 < await redis.pttl(f"{PREFIX}notify:lock_halted") <= 500
    assert await b.elect("lock_recovered")  # another key: its own election
    await asyncio.sleep(0.6)  # the window is over: the same event later is sent again
    assert await c.elect("lock_halted")


async def test_without_redis_the_smallest_live_id_sends() -> None:
    down = make_client(free_port())  # nothing listens there
    try:
        members = ["node-b", "node-a", "node-c"]
        assert await election(down, "node-a", members=members).elect("lock_halted")
        assert not await election(down, "node-b", members=members).elect("lock_halted")
        assert await election(down, "solo").elect("lock_halted")  # no member known: itself
    finally:
        await down.aclose()


async def test_a_fleet_event_seen_by_three_instances_is_sent_once(
    redis_server: RedisServer, redis: Redis, receiver: Receiver
) -> None:
    settings = NotificationSettings.model_validate(
        {"channels": [{"type": "webhook", "webhook_url": receiver.url()}], "dedupe_window": 5}
    )
    clients = [make_client(redis_server.port) for _ in range(3)]
    registries = [CollectorRegistry() for _ in range(3)]
    dispatchers = [
        build_notifier(
            settings,
            instance=name,
            registry=registry,
            election=election(client, name, window=settings.dedupe_window),
        )
        for name, client, registry in zip(("a", "b", "c"), clients, registries, strict=True)
    ]
    try:
        for dispatcher in dispatchers:
            await dispatcher.start()
        for dispatcher in dispatchers:  # every instance sees Redis come back, say
            dispatcher.emit(lock_halted("halted", "Connection refused"))
        # a symbol event is its owner's alone: no election
        dispatchers[1].emit(symbol_taken_over("ETH/USDT", "a", 3.0))
        await receiver.wait_delivered(2)
        for registry in registries:
            await counted(registry, "webhook", "sent", 0)
        await asyncio.sleep(0.3)
        deduplicated = [sample(r, "webhook", "deduplicated") for r in registries]
    finally:
        for dispatcher in dispatchers:
            await dispatcher.close()
        for client in clients:
            await client.aclose()
    events = sorted(r.json()["event"] for r in receiver.delivered)
    assert events == ["lock_halted", "symbol_taken_over"]
    assert sorted(deduplicated) == [0, 1, 1]
