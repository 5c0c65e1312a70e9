"""How long a new owner waits before trading (pure), and that it waits for real when
Redis lost a lease early while the former owner still believed it valid."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from quantmesh.coordination.membership import OwnerRecord, Recorded
from quantmesh.coordination.takeover import takeover_grace
from tests.servers.redis import RedisServer
from tests.trading.support import until

from .support import TTL, Instances

NOW = 1_000.0


def recorded(previous: OwnerRecord | None) -> Recorded:
    return Recorded(True, previous, NOW)


def record(
    owner: str = "a", state: str = "held", fence: int = 5, until: float = NOW
) -> OwnerRecord:
    return OwnerRecord(owner, state, fence, until, 0.0)  # type: ignore[arg-type]


def test_no_wait_after_a_release_or_a_lapsed_lease() -> None:
    assert takeover_grace(recorded(record(state="released")), 9, "b", 10)[0] == 0
    assert takeover_grace(recorded(record(until=NOW - 0.1)), 9, "b", 10)[0] == 0
    assert takeover_grace(recorded(record(owner="b", until=NOW + 5)), 9, "b", 10)[0] == 0


def test_a_lease_lost_early_is_waited_out_with_the_renewal_period() -> None:
    grace, reason = takeover_grace(recorded(record(until=NOW + 4)), 9, "b", 9)
    assert grace == 4 + 3 and "a's lease may still be valid" in reason


def test_a_stale_or_old_record_means_a_whole_lease_and_a_jumped_clock_is_capped() -> None:
    assert takeover_grace(recorded(record(until=NOW - 11)), 9, "b", 10)[0] == 10  # snapshot
    old_version = OwnerRecord("a", "held", 5, None, 0.0)
    assert takeover_grace(recorded(old_version), 9, "b", 10)[0] == 10
    grace, _ = takeover_grace(recorded(record(until=NOW + 3600)), 9, "b", 9)
    assert grace == 9 + 3  # not an hour


def test_without_a_record_a_whole_lease_is_waited() -> None:
    assert takeover_grace(None, 9, "b", 10)[0] == 10
    assert takeover_grace(recorded(None), 9, "b", 10)[0] == 10
    assert takeover_grace(recorded(record(fence=9)), 9, "b", 10)[0] == 10  # our own, retried


async def test_a_lease_redis_lost_early_is_not_traded_by_two(
    instances: Instances, redis_server: RedisServer, redis: Redis
) -> None:
    a = instances.start("a", redis_server.port)
    await until(lambda: a.trading() == {"ETH/USDT"}, timeout=TTL + 5)
    b = instances.start("b", redis_server.port)
    await until(lambda: b.coordinator.registered.is_set())
    # Redis loses the lease (a failover to a replica that missed it), the record stays
    await redis.delete("quantmesh:lock:{order:simulated:ETHUSDT}:owner")
    both = 0
    deadline = time.monotonic() + 3 * TTL + 3
    while b.trading() != {"ETH/USDT"}:
        assert time.monotonic() < deadline, "b never took the symbol"
        claims = [i for i in (a, b) if "ETH/USDT" in i.coordinator.owned and i.service.traders]
        valid = [i for i in claims if i.service.traders[0]._sender._owner_valid()]
        both = max(both, len(valid))
        await asyncio.sleep(0.01)
    assert both <= 1, "two instances held a valid claim on one symbol at once"
    assert a.trading() == set()
