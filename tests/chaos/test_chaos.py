"""The chaos test: three real ``quantmesh run`` processes configured with the same symbols,
sharing Redis, PostgreSQL and the exchange simulator, all started here - then killed,
frozen, cut off and deprived of their servers, one fault after another:

(a) all three on the same symbols; (b) kill -9 an owner; (c) SIGSTOP an owner past its
lease, then SIGCONT; (d) restart Redis (it keeps nothing: every lease is forgotten);
(e) stop PostgreSQL for 20 s; (f) cut one owner off Redis with a loopback proxy.

The verdict comes from the simulator's records and the database, not from the daemons:
no two orders open at once on one symbol, side and price; no level bought twice without
the sell between; no symbol traded by two instances at once (no A, B, A of accepted
actions within a short window); every fill the simulator made stored exactly once; and
each take-over within lease TTL + one check interval (+ the new owner's start-up).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer
from tests.simserver.support import EXTRA_KEYS, SimProcess, write_sim_config

from .harness import CHECK_INTERVAL, LEASE_TTL, SYMBOLS, Node, owner_of, wait_owner
from .invariants import (
    double_buys,
    fills_vs_db,
    interleavings,
    open_overlaps,
    owner_switches,
    summary,
)

pytestmark = pytest.mark.slow
Fleet = tuple[list[Node], RedisServer, PostgresServer, SimProcess]

# A take-over: the lease lapses (TTL), the next try (one check interval), then the new
# owner loads the grid and reconciles with the exchange (a few REST calls).
FAILOVER_BOUND = LEASE_TTL + CHECK_INTERVAL
STARTUP_ALLOWANCE = 3.0
# Two instances trading one symbol at once alternate within this; a hand-over never does.
INTERLEAVE_WINDOW = 1.5
# After SIGCONT, how long a request sent before the freeze may take to land.
STALE_WINDOW = 0.5
KEYS = (("chaos-key-1", "chaos-secret-1"), *EXTRA_KEYS[:2])


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with RedisServer(tmp_path / "redis") as redis, PostgresServer() as pg:
        pg.create_database("quantmesh")
        dsn = pg.url("quantmesh")
        # prices walk (a step every 0.2 s): orders fill, sells follow, levels turn over
        sim_config = write_sim_config(tmp_path / "sim", volatility=0.0005, interval=0.2)
        with SimProcess(
            tmp_path / "sim",
            "--config",
            str(sim_config),
            api_key=KEYS[0][0],
            api_secret=KEYS[0][1],
            extra_keys=KEYS[1:],
        ) as sim:
            nodes = [
                Node.create(f"node-{i + 1}", key, tmp_path, sim.port, redis.port, dsn)
                for i, key in enumerate(KEYS)
            ]
            try:
                yield nodes, redis, pg, sim
            finally:
                for node in nodes:
                    node.close()
                    (node.workdir / "stderr.log").write_text(node.stderr())


@pytest.mark.timeout(300)
def test_three_instances_survive_kills_freezes_outages_and_partitions(
    fleet: Fleet,
    capsys: pytest.CaptureFixture[str],
) -> None:
    nodes, redis, pg, sim = fleet
    failovers: list[tuple[str, str, float]] = []  # (scenario, symbol, seconds)
    bound = FAILOVER_BOUND + STARTUP_ALLOWANCE

    def took_over(scenario: str, symbol: str, old: Node, since: float) -> Node:
        new, _ = wait_owner(nodes, symbol, bound + 10, other_than=old)
        elapsed = time.monotonic() - since
        failovers.append((scenario, symbol, elapsed))
        assert elapsed <= bound, f"{scenario}: {symbol} taken over after {elapsed:.1f} s"
        return new

    # (a) all three on the same symbols: each symbol traded by exactly one of them
    for node in nodes:
        node.start()
    for symbol in SYMBOLS:
        wait_owner(nodes, symbol, 60)
    time.sleep(2)
    for symbol in SYMBOLS:
        assert owner_of(nodes, symbol) is not None

    # (b) kill -9 the owner of ETH; another takes over; the killed one comes back (as
    # systemd restarts it) and waits, its instance id free again once its entry lapsed
    victim = owner_of(nodes, "ETH/USDT")
    assert victim is not None
    lost = victim.trading()
    killed = time.monotonic()
    victim.kill()
    for symbol in sorted(lost):
        took_over("kill -9", symbol, victim, killed)
    victim.start()

    # (c) SIGSTOP the owner of BTC past its lease, then SIGCONT
    frozen, _ = wait_owner(nodes, "BTC/USDT", bound)
    lost = frozen.trading()
    frozen.pause()
    paused = time.monotonic()
    for symbol in sorted(lost):
        took_over("SIGSTOP", symbol, frozen, paused)
    time.sleep(max(0.0, LEASE_TTL + 1 - (time.monotonic() - paused)))
    thawed = time.time()  # the simulator's clock: its action log is in wall time
    frozen.resume()
    time.sleep(2)
    assert "BTC/USDT" not in frozen.trading()

    # (d) restart Redis: it forgets every lease; trading stops, then resumes, one owner each
    restarted = time.monotonic()
    redis.restart()
    owners = "quantmesh:lock:{fleet:binance}:owners"  # rebuilt by the new acquisitions
    deadline = restarted + bound + 15
    while len(redis.command("HKEYS", owners).split()) < len(SYMBOLS):
        assert time.monotonic() < deadline, "no owners again after the Redis restart"
        time.sleep(0.1)
    for symbol in SYMBOLS:
        wait_owner(nodes, symbol, bound + 15)
    failovers.append(("Redis restart", "all", time.monotonic() - restarted))

    # (e) PostgreSQL stopped for 20 s: the owners go on trading and buffer; nothing is lost
    before = len(sim.actions())
    pg.stop()
    time.sleep(20)
    during = len(sim.actions())
    pg.start()
    assert during > before, "nothing traded while the database was down"
    deadline = time.monotonic() + 30
    while any((n.metric("quantmesh_db_buffer_depth") or 0) > 0 for n in nodes):
        assert time.monotonic() < deadline, "write buffers not drained 30 s after restart"
        time.sleep(0.5)

    # (f) cut the owner of ETH off Redis: it stops within its lease, another takes over
    for symbol in SYMBOLS:
        wait_owner(nodes, symbol, bound + 10)
    cut_off = owner_of(nodes, "ETH/USDT")
    assert cut_off is not None
    lost = cut_off.trading()
    cut = time.monotonic()
    cut_off.proxy.blackhole()
    for symbol in sorted(lost):
        took_over("partition", symbol, cut_off, cut)
    cut_off.proxy.heal()
    time.sleep(2)

    # every fill the simulator made up to now ends up stored, exactly once
    made = sim.trades()
    deadline = time.monotonic() + 20
    while True:
        rows = pg.query("SELECT trade_id FROM trades", database="quantmesh")
        stored = [row[0] for row in rows]
        check = fills_vs_db(made, stored)
        if not check.missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    codes = {node.name: node.stop() for node in nodes}

    orders, actions = sim.orders(), sim.actions()
    # A request the frozen instance had checked its leases for and was sending when it was
    # stopped goes out when it thaws: no check can follow a freeze between the check and
    # the socket write. The exchange refuses a copy of an open order (deterministic client
    # ids) and the new owner adopts it; the duplicate checks below still see it. It is set
    # apart only from the "two instances at once" check, and there must be no more than
    # one per symbol.
    stale = [
        a
        for a in actions
        if a["api_key"] == frozen.key[0] and thawed <= a["t"] <= thawed + STALE_WINDOW
    ]
    assert len(stale) <= len(SYMBOLS), stale
    # for a post-mortem: every record and every log, next to the run's data
    root = nodes[0].workdir.parent
    (root / "actions.json").write_text(json.dumps(actions, indent=1))
    (root / "orders.json").write_text(json.dumps(orders, indent=1))
    live = [a for a in actions if a not in stale]
    report = summary(orders, live, made, stored, window=INTERLEAVE_WINDOW)
    worst = max(seconds for _, _, seconds in failovers)
    lines = [
        "chaos summary",
        report,
        "failovers: "
        + ", ".join(f"{name} {symbol} {seconds:.1f} s" for name, symbol, seconds in failovers),
        f"worst failover: {worst:.1f} s (bound {bound:.1f} s)",
        f"requests in flight when frozen, landed on thaw: {len(stale)}",
        f"exit codes: {codes}; records and logs in {root}",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))

    assert all(code == 0 for code in codes.values()), codes
    assert open_overlaps(orders) == []
    assert double_buys(orders) == []
    assert interleavings(live, INTERLEAVE_WINDOW) == {}
    assert check.ok, check
    assert len(made) > 0 and len(orders) > 20
    for symbol, switches in owner_switches(actions).items():
        # one change per take-over at most, and a few hand-backs: nothing like alternation
        assert switches.count <= 12, (symbol, switches)
