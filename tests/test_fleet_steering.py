"""Steering a running fleet on the compose layout as local processes (``deploy/local/ha.py``:
two masters - quantmesh-1 with ETH and BTC, quantmesh-2 with BNB and SOL - and a standby
for all four, sharing Redis, PostgreSQL and the exchange simulator), as people do it:

1. ``quantmesh ctl pause`` on an instance that does not own the symbol: its owner stops
   placing within one check, and nobody places on it afterwards;
2. BTC moved from quantmesh-1's file to quantmesh-2's, the giver reloaded first (SIGHUP,
   as ``systemctl reload`` and ``docker kill -s HUP`` send it), the taker second
   (``quantmesh reload``); then moved back, the taker first;
3. a file that does not validate: ``quantmesh reload`` prints the problem, exits 2, and the
   instance trades on;
4. kill -9 the owner of the paused symbol: the standby takes it over still paused, and a
   resume sent to another instance reaches it.

Throughout, a watcher samples every instance's status: a moved symbol is never traded by
two instances at once, and after the second reload of a move nobody trades it for no
longer than ``check_interval`` plus one start. At the end the simulator's records give the
chaos test's verdict: no order open twice on a level, no level bought or sold twice in a
row, no client order id reused after a fill, and every fill stored once in PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chaos.invariants import (
    double_buys,
    double_sells,
    fills_vs_db,
    open_overlaps,
    reused_after_fill,
)
from tests.exchange.sim.server.support import duplicates
from tests.ha_fleet import (
    Run,
    accepted_twice_while_open,
    get,
    instance_env,
    post,
    started,
    token,
    wait_ready,
)
from tests.servers.base import wait_until
from tests.servers.postgres import PG_BIN_DIRS

pytestmark = pytest.mark.slow

ONE, TWO, STANDBY = "quantmesh-1", "quantmesh-2", "quantmesh-3"
ETH, BTC = "ETH/USDT", "BTC/USDT"
START = 5.0  # one trader's start: the grid loaded from PostgreSQL, reconciled over REST
SAMPLE = 0.05  # how often the watcher reads every instance's status


@dataclass
class Watcher:
    """Samples which instances trade each symbol, from their ``/api/status``, in a thread."""

    run: Run
    names: tuple[str, ...] = (ONE, TWO, STANDBY)
    samples: list[tuple[float, dict[str, set[str]]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _sample(self) -> None:
        while not self._stop.is_set():
            trading: dict[str, set[str]] = {}
            for name in self.names:
                for symbol in _trading(self.run, name):
                    trading.setdefault(symbol, set()).add(name)
            self.samples.append((time.monotonic(), trading))
            self._stop.wait(SAMPLE)

    def doubles(self) -> list[tuple[float, str, set[str]]]:
        """Samples in which two instances traded one symbol."""
        return [
            (at, symbol, names)
            for at, trading in self.samples
            for symbol, names in trading.items()
            if len(names) > 1
        ]

    def longest_gap(self, symbol: str, since: float) -> float:
        """The longest stretch after ``since`` in which nobody traded ``symbol``."""
        longest, gap_from = 0.0, None
        for at, trading in self.samples:
            if at < since:
                continue
            if trading.get(symbol):
                if gap_from is not None:
                    longest = max(longest, at - gap_from)
                gap_from = None
            elif gap_from is None:
                gap_from = at
        return longest

    def changes(self, symbol: str, since: float) -> str:
        """Who traded ``symbol`` after ``since``, each change with its time: ``+0.0 a,
        +2.1 -, +4.0 b``."""
        out, last = [], None
        for at, trading in self.samples:
            names = ",".join(sorted(trading.get(symbol, ()))) or "-"
            if at >= since and (names != last or not out):
                out.append(f"+{at - since:.1f} {names}")
            last = names
        return " ".join(out)

    def traders(self, symbol: str) -> set[str]:
        return self.samples[-1][1].get(symbol, set()) if self.samples else set()


def _trading(run: Run, name: str) -> set[str]:
    """What an instance owns and trades by its status; nothing when it does not answer."""
    try:
        code, body = get(run.instance(name)["status"], token())
    except OSError:  # dead, or not serving yet
        return set()
    if code != 200:
        return set()
    status: dict[str, Any] = json.loads(body)
    owned = set(status["ownership"]["owned"])
    return {s for s in owned if status["symbols"].get(s, {}).get("trading")}


@pytest.fixture
def fleet() -> Iterator[Run]:
    with started("--keep-going", duration=240) as run:
        yield run


def _config(run: Run, name: str) -> Path:
    return Path(run.instance(name)["config"])


def _edit_symbols(run: Run, name: str, add: str | None = None, drop: str | None = None) -> None:
    """Rewrite one instance's file (atomically, as editors do): ``add`` copied from the
    standby's entry, ``drop`` removed."""
    path = _config(run, name)
    config = yaml.safe_load(path.read_text())
    entries = config["trading"]["symbols"]
    if drop is not None:
        entries[:] = [e for e in entries if e["symbol"] != drop.replace("/", "")]
    if add is not None:
        standby = yaml.safe_load(_config(run, STANDBY).read_text())
        wanted = add.replace("/", "")
        entries.append(next(e for e in standby["trading"]["symbols"] if e["symbol"] == wanted))
    _write(path, yaml.safe_dump(config, sort_keys=False))


def _write(path: Path, text: str) -> None:
    scratch = path.with_suffix(".new")
    scratch.write_text(text)
    scratch.replace(path)


def _sighup(run: Run, name: str) -> None:
    os.kill(run.info["processes"][name]["pid"], signal.SIGHUP)


def _reload_cli(run: Run, name: str) -> list[str]:
    result = run.quantmesh(name, "reload", "-c", str(_config(run, name)))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _last_reload_after(run: Run, name: str, since: float) -> dict[str, Any] | None:
    report: dict[str, Any] | None = run.status(name).get("reload")
    return report if report is not None and report["at"] >= since else None


def _move(run: Run, watcher: Watcher, symbol: str, giver: str, taker: str, first: str) -> str:
    """Move ``symbol`` from ``giver``'s file to ``taker``'s; reload ``first`` by SIGHUP,
    the other by ``quantmesh reload``. Returns a line of what it measured."""
    second = taker if first == giver else giver
    _edit_symbols(run, giver, drop=symbol)
    _edit_symbols(run, taker, add=symbol)
    asked = time.time()
    _sighup(run, first)
    wait_until(lambda: _last_reload_after(run, first, asked) is not None, 10, f"{first} reloads")
    report = _last_reload_after(run, first, asked)
    assert report is not None and report["ok"], report
    verb = "removed" if first == giver else "added"
    assert report["changes"] == [f"symbol {verb}: {symbol}"], report
    time.sleep(1.5)  # the second reload comes a moment later, as a person types it
    second_at = time.monotonic()
    lines = _reload_cli(run, second)
    verb = "removed" if second == giver else "added"
    assert lines == [f"symbol {verb}: {symbol}"], lines

    def taken() -> bool:
        run.alive()
        return watcher.traders(symbol) == {taker}

    check = float(yaml.safe_load(_config(run, taker).read_text())["coordination"]["check_interval"])
    lease = float(yaml.safe_load(_config(run, taker).read_text())["coordination"]["lease_ttl"])
    wait_until(taken, lease + check + START, f"{taker} to trade {symbol}", interval=0.05)
    took = time.monotonic() - second_at
    time.sleep(2 * check)  # and it stays there
    assert watcher.traders(symbol) == {taker}
    gap = watcher.longest_gap(symbol, second_at)
    assert gap <= check + START, (
        f"{symbol} untraded for {gap:.1f} s after the second reload: "
        + watcher.changes(symbol, second_at)
    )
    return (
        f"{symbol} {giver} -> {taker}, {first} first: {took:.1f} s, longest gap {gap:.1f} s "
        f"({watcher.changes(symbol, second_at)})"
    )


def _control_mode(run: Run, name: str, symbol: str) -> str | None:
    view = run.status(name)["symbols"].get(symbol)
    return None if view is None else str(view["control"]["mode"])


def _created_after(orders: list[dict[str, Any]], symbol: str, since: float) -> list[str]:
    return [
        str(o["client_order_id"])
        for o in orders
        if o["symbol"] == symbol and float(o["created_at"]) > since
    ]


def _stored_trade_ids(run: Run, made: list[dict[str, Any]]) -> list[str]:
    """The trade ids PostgreSQL holds of the fills in ``made``, once those are all in (or
    after 20 s: the verdict then names what is missing)."""
    made_ids = {str(t["trade_id"]) for t in made}
    deadline = time.monotonic() + 20
    while True:
        stored = [i for i in _query_trade_ids(run) if i in made_ids]
        if not fills_vs_db(made, stored).missing or time.monotonic() > deadline:
            return stored
        time.sleep(1)


def _query_trade_ids(run: Run) -> list[str]:
    psql = next((f"{d}/psql" for d in PG_BIN_DIRS if Path(f"{d}/psql").exists()), "psql")
    port = run.info["processes"]["postgres"]["port"]
    env = {**os.environ, "PGPASSWORD": instance_env(ONE)["POSTGRES_PASSWORD"]}
    done = subprocess.run(
        [psql, "-h", "127.0.0.1", "-p", str(port), "-U", "quantmesh", "-d", "quantmesh",
         "-Atc", "SELECT trade_id FROM trades"],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout.split()


@pytest.mark.timeout(240)
def test_pause_reload_moves_and_a_failover_steer_a_fleet_of_three(
    fleet: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    run = fleet
    for name in (ONE, TWO, STANDBY):
        wait_ready(run, name, run.instance(name)["readyz"], 60)
    watcher = Watcher(run)
    watcher.start()
    measured: list[str] = []
    try:
        wait_until(
            lambda: watcher.traders(ETH) == {ONE} and watcher.traders(BTC) == {ONE},
            30,
            "quantmesh-1 to trade ETH and BTC",
            interval=0.1,
        )

        # 1. pause ETH through quantmesh-2, which does not own it
        paused = run.quantmesh(
            TWO, "ctl", "pause", ETH, "--reason", "fleet test", "--by", "ops",
            "-c", str(_config(run, TWO)),
        )  # fmt: skip
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.startswith(f"{ETH}: paused, by ops, reason 'fleet test'"), paused
        asked = time.monotonic()
        wait_until(lambda: _control_mode(run, ONE, ETH) == "paused", 10, "the owner pauses")
        measured.append(f"pause followed by the owner after {time.monotonic() - asked:.1f} s")
        paused_at = time.time()

        # 2. BTC moved to quantmesh-2 (giver first), then back (taker first)
        measured.append(_move(run, watcher, BTC, giver=ONE, taker=TWO, first=ONE))
        measured.append(_move(run, watcher, BTC, giver=TWO, taker=ONE, first=ONE))

        # 3. a file that does not validate changes nothing
        good = _config(run, TWO).read_text()
        _write(_config(run, TWO), good.replace("buy_window_size: 5", "buy_window_size: -5", 1))
        refused = run.quantmesh(TWO, "reload", "-c", str(_config(run, TWO)))
        assert refused.returncode == 2, refused
        assert "buy_window_size" in refused.stderr and "Traceback" not in refused.stderr
        _write(_config(run, TWO), good)
        assert set(run.status(TWO)["ownership"]["owned"]) == {"BNB/USDT", "SOL/USDT"}

        # 4. the owner of the paused symbol dies: the standby takes it over, still paused
        os.killpg(run.info["processes"][ONE]["pid"], signal.SIGKILL)
        killed = time.monotonic()
        wait_until(
            lambda: watcher.traders(ETH) == {STANDBY} and watcher.traders(BTC) == {STANDBY},
            10 + 2 + START,  # the compose layout's lease_ttl + check_interval + a start
            "the standby to take quantmesh-1's symbols over",
            interval=0.1,
        )
        measured.append(f"failover of a paused symbol: {time.monotonic() - killed:.1f} s")
        assert _control_mode(run, STANDBY, ETH) == "paused"
        time.sleep(2)  # prices move every few tenths of a second: nothing may be placed
        placed = _created_after(run.orders(), ETH, paused_at + 0.5)
        assert placed == [], f"{ETH} orders placed while paused: {placed}"

        # resumed through quantmesh-2 again: the standby, now its owner, follows
        code, body = post(
            f"http://127.0.0.1:{run.info['processes'][TWO]['port']}/api/symbols/{ETH}/resume",
            token(),
            {"reason": "fleet test over", "by": "ops"},
        )
        assert code == 200, body
        resumed = time.time()
        wait_until(lambda: _control_mode(run, STANDBY, ETH) == "active", 10, "standby resumes")
        wait_until(
            lambda: _created_after(run.orders(), ETH, resumed) != [],
            10,
            "orders on ETH again",
            interval=0.2,
        )
    finally:
        watcher.stop()

    orders = run.orders()
    trades = run.trades()
    stored = _stored_trade_ids(run, trades)
    with capsys.disabled():
        print("\nfleet steering: " + "; ".join(measured))
        print(f"orders {len(orders)}, fills {len(trades)}, samples {len(watcher.samples)}")
    assert watcher.doubles() == []
    assert len(watcher.samples) > 200
    assert open_overlaps(orders) == []
    assert double_buys(orders) == []
    assert double_sells(orders) == []
    assert reused_after_fill(orders) == []
    assert accepted_twice_while_open(orders) == []
    assert duplicates(orders) == []
    check = fills_vs_db(trades, stored)
    assert not check.missing and not check.duplicated, check
