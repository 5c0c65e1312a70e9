"""The chaos test: three real ``quantmesh run`` processes configured with the same symbols,
sharing Redis, PostgreSQL and the exchange simulator, all started here - then killed,
frozen, cut off and deprived of their servers, one fault after another:

(a) all three on the same symbols; (b) kill -9 an owner; (c) SIGSTOP an owner past its
lease, then SIGCONT; (d) restart Redis (it keeps nothing: every lease is forgotten);
(e) stop PostgreSQL for 20 s; (f) cut one owner off Redis with a loopback proxy; (g) cut
one owner off PostgreSQL while one of its buys fills, then off Redis: another takes the
symbol over from a grid that lacks that fill; then the database comes back (the former
owner replays its journal under its old fence) and Redis.

The verdict comes from the simulator's records and the database, not from the daemons:
no two orders open at once on one symbol, side and price; no level bought twice without
the sell between, nor sold twice without the buy between; no client order id placed again
after an order with that id filled; no symbol traded by two instances at once (no A, B, A
of accepted actions within a short window); no request of an instance accepted after its
lease ended (every create and cancel expires before the lease does); every fill the
simulator made stored exactly once; and each take-over within lease TTL + one check
interval (+ the new owner's start-up).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from quantmesh.grid.ids import parse_client_order_id
from tests.exchange.sim.server.support import EXTRA_KEYS, SimProcess
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

from .faults import LATE_SLACK, Faults
from .harness import (
    LEASE_TTL,
    STATEMENT_TIMEOUT,
    SYMBOLS,
    Node,
    owner_of,
    settled,
    sim_fleet,
)
from .invariants import (
    Leaseless,
    double_buys,
    double_sells,
    fills_vs_db,
    interleavings,
    late_actions,
    open_overlaps,
    owner_switches,
    reused_after_fill,
    summary,
)

pytestmark = pytest.mark.slow

# Two instances trading one symbol at once alternate within this; a hand-over never does.
INTERLEAVE_WINDOW = 1.5
# After SIGCONT, how long a request sent before the freeze may take to land.
LANDED_WINDOW = 0.5
# The database's sessions other than this query: state, wait, blockers, the transaction's age
# and its last statement.
_SESSIONS = (
    "SELECT pid, application_name, state, wait_event_type, wait_event, pg_blocking_pids(pid), "
    "now() - xact_start, now() - state_change, left(query, 80) FROM pg_stat_activity "
    "WHERE datname = 'quantmesh' AND pid <> pg_backend_pid() ORDER BY pid"
)
KEYS = (("chaos-key-1", "chaos-secret-1"), *EXTRA_KEYS[:2])


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    with RedisServer(tmp_path / "redis") as redis, PostgresServer() as pg:
        pg.create_database("quantmesh")

        def node(name: str, key: tuple[str, str], sim_port: int) -> Node:
            return Node.create(name, key, tmp_path, sim_port, redis.port, pg, "quantmesh")

        with sim_fleet(tmp_path, KEYS, node) as (nodes, sim):
            yield Chaos(nodes, redis=redis, pg=pg, sim=sim)


@dataclass(kw_only=True)
class Chaos(Faults):
    """The fleet and its servers, the faults done to them, and what they showed."""

    redis: RedisServer
    pg: PostgresServer
    sim: SimProcess
    # from cutting an owner off its database to its first journaled write
    buffering_after: float = 0.0
    cut_fill: str = ""  # the buy that filled while its owner was cut off, and its fate

    def took_over(self, scenario: str, lost: set[str], old: Node, since: float) -> None:
        """As ``Faults.took_over``; a take-over that does not come also shows the database's
        sessions and who waits on whom (a row lock held against the new owner)."""
        try:
            super().took_over(scenario, lost, old, since)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.sessions()}") from None

    def sessions(self) -> str:
        try:
            rows = self.pg.query(_SESSIONS, database="quantmesh")
        except Exception as exc:  # noqa: BLE001 - a diagnosis, on top of a failure
            return f"sessions unavailable: {exc}"
        return "database sessions:\n" + "\n".join("  " + " | ".join(row) for row in rows)

    def restart_redis(self) -> None:
        """(d) Redis restarts empty: every lease is gone; each symbol gets one owner again."""
        restarted = time.monotonic()
        self.redis.restart()
        for symbol in SYMBOLS:
            settled(self.nodes, self.redis, symbol, self.bound + 15)
        self.failovers.append(("Redis restart", "all", time.monotonic() - restarted))

    def stop_database(self) -> None:
        """(e) PostgreSQL stopped for 20 s: the owners go on trading and buffer."""
        before = len(self.sim.actions())
        self.pg.stop()
        time.sleep(20)
        during = len(self.sim.actions())
        self.pg.start()
        assert during > before, "nothing traded while the database was down"
        deadline = time.monotonic() + 30
        while any((n.metric("quantmesh_db_buffer_depth") or 0) > 0 for n in self.nodes):
            assert time.monotonic() < deadline, "write buffers not drained 30 s after restart"
            time.sleep(0.5)

    def partition_owner(self) -> None:
        """(f) cut the owner of ETH off Redis: it stops within its lease, another takes over."""
        for symbol in SYMBOLS:
            settled(self.nodes, self.redis, symbol, self.bound + 10)
        self.cut_off_owner("partition", lambda node: node.redis_proxy)

    def cut_database_then_redis(self) -> None:
        """(g) the owner of ETH loses PostgreSQL while one of its buys fills, then Redis:
        another instance takes ETH over from a grid that does not have that fill. Then the
        database comes back - the former owner replays its journal, its grid writes refused
        by the new fence, its fills stored - and then Redis: it waits."""
        for symbol in SYMBOLS:
            settled(self.nodes, self.redis, symbol, self.bound + 10)
        victim = owner_of(self.nodes, "ETH/USDT")
        assert victim is not None
        cut_db, cut_db_wall = time.monotonic(), time.time()
        victim.db_proxy.blackhole()
        # Its calls time out one after another (a read that fails does not start the
        # buffering, a write does); once a write is journaled, the rest follow at once.
        deadline = cut_db + 30
        while not (victim.metric("quantmesh_db_buffer_depth") or 0) > 0:
            assert time.monotonic() < deadline, f"{victim.name} journaled nothing in 30 s"
            time.sleep(0.2)
        self.buffering_after = time.monotonic() - cut_db
        buy = self.dip_to_highest_buy(victim, "ETH/USDT") or self.filled_buy(
            victim, "ETH/USDT", cut_db_wall
        )
        assert buy is not None, f"{victim.name}: no buy open, none filled since the cut"
        # the fill applied in memory, its write journaled: the sell of the level follows (an
        # owner that cannot tell new fills without the database keeps the level blocked)
        applied = self.wait_for_sell_of(victim, buy)
        self.cut_fill = f"{buy['client_order_id']} {'applied' if applied else 'not applied'}"
        lost = victim.trading()
        assert "ETH/USDT" in lost
        lease_end = time.time() + LEASE_TTL + LATE_SLACK
        cut = time.monotonic()
        victim.redis_proxy.blackhole()
        self.took_over("database, then Redis", lost, victim, cut)
        victim.db_proxy.heal()
        deadline = time.monotonic() + 20
        while (victim.metric("quantmesh_db_buffer_depth") or 0) > 0:
            assert time.monotonic() < deadline, "journal not replayed 20 s after the database"
            time.sleep(0.5)
        victim.redis_proxy.heal()
        self.quiet(victim, "database, then Redis")
        time.sleep(2)
        assert not victim.trading(), "a former owner back from its outages trades again"
        self.leaseless.append(
            Leaseless(victim.key[0], lease_end, time.time(), "database, then Redis")
        )

    def buys(self, node: Node, symbol: str) -> list[dict[str, Any]]:
        return [
            o
            for o in self.sim.orders()
            if o["api_key"] == node.key[0] and o["symbol"] == symbol and o["side"] == "buy"
        ]

    def dip_to_highest_buy(self, node: Node, symbol: str) -> dict[str, Any] | None:
        """Move the price down to ``node``'s highest open buy on ``symbol``, which fills it
        (the price walk carries on from where it was at its next step); that order, or None
        when ``node`` has no buy open within 5 s."""
        deadline = time.monotonic() + 5
        while not (buys := [o for o in self.buys(node, symbol) if o["status"] == "open"]):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)
        buy = max(buys, key=lambda o: Decimal(str(o["price"])))
        self.sim.set_price(symbol, buy["price"])
        return buy

    def filled_buy(self, node: Node, symbol: str, since: float) -> dict[str, Any] | None:
        """The latest buy of ``node`` on ``symbol`` filled since ``since`` (wall time)."""
        filled = [
            o
            for o in self.buys(node, symbol)
            if Decimal(str(o["filled"])) > 0 and float(o["updated_at"]) >= since
        ]
        return max(filled, key=lambda o: float(o["updated_at"]), default=None)

    def wait_for_sell_of(self, node: Node, buy: dict[str, Any], timeout: float = 15) -> bool:
        """Whether ``node`` placed the sell of ``buy``'s level (``S<level>.<cycle+1>``)
        within ``timeout``: the fill reached it and changed its grid."""
        key = parse_client_order_id(str(buy["client_order_id"]))
        assert key is not None
        sell = f"qm.{key.tag}.S{key.level}.{key.cycle + 1}"
        deadline = time.monotonic() + timeout
        while not any(
            a["client_order_id"] == sell and a["api_key"] == node.key[0] for a in self.sim.actions()
        ):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def stored_fills(self) -> tuple[list[dict[str, object]], list[str]]:
        """The simulator's fills so far, and the trade ids stored once those are all in
        (or after 20 s: the verdict then names what is missing)."""
        made = self.sim.trades()
        deadline = time.monotonic() + 20
        while True:
            rows = self.pg.query("SELECT trade_id FROM trades", database="quantmesh")
            stored = [row[0] for row in rows]
            if not fills_vs_db(made, stored).missing or time.monotonic() > deadline:
                return made, stored
            time.sleep(1)

    def landed_on_thaw(self, actions: list[dict[str, object]]) -> list[dict[str, object]]:
        """Requests the frozen node was sending as it froze, arriving as it thawed (no check
        can sit between the lease check and the socket write): each must be refused as
        expired; one accepted is also in ``late_actions``."""
        if self.frozen is None:
            return []
        key = self.frozen.key[0]
        return [
            a
            for a in actions
            if a["api_key"] == key
            and self.thawed <= float(str(a["t"])) <= self.thawed + LANDED_WINDOW
        ]


@pytest.mark.timeout(300)
def test_three_instances_survive_kills_freezes_outages_and_partitions(
    chaos: Chaos, capsys: pytest.CaptureFixture[str]
) -> None:
    chaos.start()
    chaos.kill_owner()
    chaos.freeze_owner()
    chaos.restart_redis()
    chaos.stop_database()
    chaos.partition_owner()
    chaos.cut_database_then_redis()
    made, stored = chaos.stored_fills()
    codes = {node.name: node.stop() for node in chaos.nodes}

    orders, actions = chaos.sim.orders(), chaos.sim.actions()
    root = chaos.nodes[0].workdir.parent  # the fixture leaves the records there, beside the logs
    made_ids = {str(t["trade_id"]) for t in made}
    stored = [i for i in stored if i in made_ids]  # fills made after the snapshot aside
    landed = chaos.landed_on_thaw(actions)
    refused = Counter(a["code"] for a in landed if a["result"] == "rejected")
    late = late_actions(actions, chaos.leaseless)
    lines = [
        "chaos summary",
        summary(orders, actions, made, stored, window=INTERLEAVE_WINDOW),
        chaos.report("; the Redis restart is a recovery, with a whole lease of grace"),
        f"requests in flight when frozen, landed on thaw: {len(landed)} (refused: "
        + (", ".join(f"{code}={n}" for code, n in sorted(refused.items())) or "none")
        + ")",
        f"requests accepted after their lease ended: {len(late)}",
        f"owner cut off its database: first write journaled after {chaos.buffering_after:.1f} s "
        + f"(statement timeout {STATEMENT_TIMEOUT:g} s); buy filled meanwhile: {chaos.cut_fill}",
        f"exit codes: {codes}; records and logs in {root}",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))

    assert all(code == 0 for code in codes.values()), codes
    assert open_overlaps(orders) == []
    assert double_buys(orders) == []
    assert reused_after_fill(orders) == []
    assert double_sells(orders) == []
    assert late == [], late
    assert interleavings(actions, INTERLEAVE_WINDOW) == {}
    check = fills_vs_db(made, stored)
    assert not check.missing and not check.duplicated, check
    assert len(made) > 0 and len(orders) > 20
    for symbol, switches in owner_switches(actions).items():
        # one change per take-over or hand-back: nothing like two traders alternating
        assert switches.count <= 12, (symbol, switches)
    assert chaos.findings == []
