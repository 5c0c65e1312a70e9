"""Membership heartbeats and ownership records in a real Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from quantmesh.coordination.allocation import Member
from quantmesh.coordination.fleet import Fleet

ME = Member("node-1", "master", frozenset({"ETH/USDT"}))


def fleet(redis: Redis, member: Member = ME, ttl: float = 1.0) -> Fleet:
    return Fleet(redis, prefix="quantmesh:lock:", exchange="binance", me=member, ttl=ttl)


async def test_members_are_listed_until_their_heartbeat_lapses(redis: Redis) -> None:
    one = fleet(redis)
    two = fleet(redis, Member("node-2", "standby", frozenset({"ETH/USDT", "BTC/USDT"})), 0.3)
    assert (await one.heartbeat()).ok and (await two.heartbeat()).ok
    members = {m.id: m for m in await one.members()}
    assert set(members) == {"node-1", "node-2"}
    assert members["node-2"].role == "standby"
    assert members["node-2"].symbols == {"ETH/USDT", "BTC/USDT"}
    await asyncio.sleep(0.4)
    assert [m.id for m in await one.members()] == ["node-1"]
    await one.heartbeat()  # sweeps the lapsed entry's info too
    assert await redis.hkeys("quantmesh:lock:{fleet:binance}:info") == [b"node-1"]


async def test_a_second_live_process_with_the_same_id_is_refused(redis: Redis) -> None:
    first, second = fleet(redis), fleet(redis)
    assert (await first.heartbeat()).ok
    refused = await second.heartbeat()
    assert not refused.ok
    assert refused.other is not None and refused.other["token"] == first.token
    assert 0 < refused.other_left <= 1.0
    assert (await first.heartbeat()).ok  # the first keeps its place


async def test_a_lapsed_entry_with_the_same_id_is_taken_over(redis: Redis) -> None:
    first, second = fleet(redis, ttl=0.2), fleet(redis)
    assert (await first.heartbeat()).ok
    await asyncio.sleep(0.3)
    assert (await second.heartbeat()).ok
    assert not (await first.heartbeat()).ok  # the old process, thawed, is now the duplicate


async def test_leave_drops_only_our_own_entry(redis: Redis) -> None:
    first, second = fleet(redis), fleet(redis)
    await first.heartbeat()
    assert not await second.leave()
    assert [m.id for m in await first.members()] == ["node-1"]
    assert await first.leave()
    assert await first.members() == []


async def test_owner_records_return_the_previous_owner(redis: Redis) -> None:
    one = fleet(redis)
    two = fleet(redis, Member("node-2", "master", frozenset({"ETH/USDT"})))
    first = await one.record_owner("ETH/USDT", "held", 1_764_000_000_000_001, 1.5)
    assert first.stored and first.previous is None
    second = await two.record_owner("ETH/USDT", "held", 1_764_000_000_000_002, 2.5)
    previous = second.previous
    assert second.stored and previous is not None
    assert (previous.owner, previous.state, previous.fence, previous.since) == (
        "node-1",
        "held",
        1_764_000_000_000_001,  # fences survive exactly (no float rounding)
        1.5,
    )
    # a held record runs until a lease from now; the server's clock says when
    assert previous.until is not None
    assert second.now < previous.until <= second.now + 1.0
    await two.record_owner("ETH/USDT", "released", 1_764_000_000_000_002, 2.5)
    records = await one.owners()
    assert records["ETH/USDT"].owner == "node-2" and records["ETH/USDT"].state == "released"


async def test_a_former_owner_cannot_overwrite_its_successors_record(redis: Redis) -> None:
    old = fleet(redis)
    new = fleet(redis, Member("node-2", "master", frozenset({"ETH/USDT"})))
    await old.record_owner("ETH/USDT", "held", 100, 1.0)
    await new.record_owner("ETH/USDT", "held", 200, 2.0)
    refused = await old.record_owner("ETH/USDT", "released", 100, 1.0)
    assert not refused.stored
    assert refused.previous is not None and refused.previous.owner == "node-2"
    assert (await old.owners())["ETH/USDT"].owner == "node-2"


async def test_a_late_refresh_cannot_undo_a_release(redis: Redis) -> None:
    one = fleet(redis)
    await one.record_owner("ETH/USDT", "held", 100, 1.0)
    await one.record_owner("ETH/USDT", "released", 100, 1.0)
    late = await one.record_owner("ETH/USDT", "held", 100, 1.0)  # sent before, landed after
    assert not late.stored
    assert (await one.owners())["ETH/USDT"].state == "released"


async def test_records_and_members_of_an_older_version_are_read(redis: Redis) -> None:
    one = fleet(redis)
    owners = "quantmesh:lock:{fleet:binance}:owners"
    await redis.hset(owners, "ETH/USDT", '{"owner":"node-9","state":"held","fence":7,"since":1}')
    await redis.hset(owners, "BTC/USDT", "not json")
    records = await one.owners()
    assert set(records) == {"ETH/USDT"} and records["ETH/USDT"].until is None
    taken = await one.record_owner("ETH/USDT", "held", 8, 2.0)  # the Lua reads it too
    assert taken.stored and taken.previous is not None and taken.previous.owner == "node-9"
    garbled = await one.record_owner("BTC/USDT", "held", 8, 2.0)  # overwritten, not a crash
    assert garbled.stored and garbled.previous is None
    await one.heartbeat()
    await redis.hset("quantmesh:lock:{fleet:binance}:info", "node-1", '{"id": "node-1"}')
    assert await one.members() == []  # unreadable entries are left out, nothing crashes
