"""A fleet on a three-member etcd cluster: losing one member (the leader, the one the
instances talk to) keeps the symbol traded by exactly one instance; losing a second
(no quorum) halts placing (``fallback_mode: halt``), and a member back restores it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.servers.etcd import EtcdCluster
from tests.trading.support import until

from .support import TTL, Instance, Instances

pytestmark = pytest.mark.timeout(90)
ETH = "ETH/USDT"


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as members:
        yield members


async def one_trader(fleet: tuple[Instance, ...], seconds: float) -> tuple[set[str], float]:
    """Watch ``fleet`` for ``seconds``: never two instances trading ETH at once; who did,
    and for how long nobody did."""
    seen: set[str] = set()
    idle = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        trading = [i.name for i in fleet if ETH in i.trading()]
        assert len(trading) <= 1, f"{ETH} traded by {trading} at once"
        seen.update(trading)
        idle += 0.05 if not trading else 0.0
        await asyncio.sleep(0.05)
    return seen, idle


async def test_a_member_lost_keeps_one_trader_and_no_quorum_halts(
    instances: Instances, cluster: EtcdCluster
) -> None:
    instances.server = "etcd"
    leader = cluster.leader()
    # the leader first: the instances send every request to it until it fails
    urls = [leader.url, *(m.url for m in cluster.members if m is not leader)]
    a = instances.start("a", 0, endpoints=urls)
    await until(lambda: a.trading() == {ETH})
    b = instances.start("b", 0, endpoints=urls)
    await until(lambda: b.coordinator.registered.is_set())
    fleet = (a, b)

    leader.kill()  # one of three members lost: the other two elect a leader
    seen, idle = await one_trader(fleet, 2 * TTL + 2)
    owner = next(i for i in fleet if ETH in i.trading())  # one trades it after the loss
    assert all(i.lock.state == "distributed" for i in fleet)
    failovers = sum(i.sample("quantmesh_failovers_total", symbol=ETH) for i in fleet)
    print(f"\netcd leader lost: {ETH} traded by {sorted(seen)}, {failovers:g} failovers, "
          f"{idle:.2f} s without a trader")  # fmt: skip

    second = next(m for m in cluster.members if m.process.running)
    second.kill()  # two of three lost: no quorum, nothing can be granted or renewed
    await until(lambda: owner.lock.state == "halted", timeout=5)
    await until(lambda: owner.trading() == set(), timeout=TTL + 2)
    nobody, _ = await one_trader(fleet, TTL)
    assert nobody == set()  # nobody trades without a quorum

    second.start()  # a quorum again: a member back with its data
    await until(lambda: all(i.lock.state == "distributed" for i in fleet), timeout=15)
    await until(lambda: any(ETH in i.trading() for i in fleet), timeout=2 * TTL + 5)
    await one_trader(fleet, 1.0)
    await asyncio.gather(a.close(), b.close())
