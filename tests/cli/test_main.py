"""End-to-end tests of the ``quantmesh`` command: real subprocesses, real files.

The expensive part is shared: one module-scoped pair of daemon runs (the newcomer path:
first run, ``status``, second run on the same files) backs most daemon assertions. Broken
configurations are in ``test_broken_configs.py``.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

import quantmesh

from .support import (
    CONFIG_NAME,
    SYMBOL,
    Daemon,
    Result,
    assert_no_traceback,
    changed,
    fast_config,
    listing,
    plain_lines,
    read_only,
    run_cli,
    sim_orders,
    write_config,
)

# Realistic-looking credentials; the simulated exchange ignores them, the logs must too.
API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
API_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


# ---------------------------------------------------------------- version and check-config


def test_version_prints_the_version(tmp_path: Path) -> None:
    result = run_cli(["--version"], tmp_path, timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"quantmesh {quantmesh.__version__}"


def test_check_config_prints_the_effective_settings(tmp_path: Path) -> None:
    path = write_config(tmp_path, fast_config())
    result = run_cli(["check-config", CONFIG_NAME], tmp_path, timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    shown = yaml.safe_load(result.stdout)
    symbol = shown["trading"]["symbols"][0]
    assert symbol["symbol"] == SYMBOL
    assert Decimal(str(symbol["price_interval"])) == 5
    assert (symbol["buy_window_size"], symbol["sell_window_size"]) == (3, 3)
    assert shown["exchange"]["simulated"]["markets"][SYMBOL]["feed"]["seed"] == 7
    assert shown["database"]["dsn"] == "./data/quantmesh.db"
    assert listing(tmp_path) == [path.name]  # validating writes nothing


def test_check_config_prints_warnings_on_stderr_and_still_exits_0(tmp_path: Path) -> None:
    config = changed(fast_config(), {"http": {"enabled": True, "host": "0.0.0.0"}})
    write_config(tmp_path, config)
    result = run_cli(["check-config", CONFIG_NAME], tmp_path, timeout=10)
    assert result.returncode == 0, result.stderr
    warning = (
        "warning: http.host: 0.0.0.0 is not a loopback address and http.token is empty: "
        "/api/status is readable by anyone who reaches it, and state-changing endpoints are "
        "refused; set http.token (e.g. ${QUANTMESH_HTTP_TOKEN}) or bind to 127.0.0.1"
    )
    assert result.stderr.splitlines() == [warning]
    assert yaml.safe_load(result.stdout)["http"]["host"] == "0.0.0.0"  # stdout stays YAML
    write_config(tmp_path, changed(config, {"http.token": "s3cret"}))
    result = run_cli(["check-config", CONFIG_NAME], tmp_path, timeout=10)
    assert (result.returncode, result.stderr) == (0, "")


def test_check_config_masks_every_secret(tmp_path: Path) -> None:
    dsn_password = "hunter2secret"
    config = changed(
        fast_config(),
        {
            "exchange.api_key": "${QM_TEST_API_KEY}",
            "exchange.secret": API_SECRET,
            "database.type": "postgres",
            "database.dsn": f"postgresql://u:{dsn_password}@h/db",
        },
    )
    write_config(tmp_path, config)
    result = run_cli(["check-config", CONFIG_NAME], tmp_path, {"QM_TEST_API_KEY": API_KEY}, 10)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for secret in (API_KEY, API_SECRET, dsn_password):
        assert secret not in output
    shown = yaml.safe_load(result.stdout)
    assert shown["exchange"]["api_key"] == "***"
    assert shown["exchange"]["secret"] == "***"
    assert shown["database"]["dsn"] == "postgresql://u:***@h/db"


# ---------------------------------------------------------------- startup failures


def test_unwritable_data_directory_fails_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where the data directory should be\n")
    config = changed(fast_config(), {"database.dsn": str(blocker / "db.sqlite")})
    write_config(tmp_path, config)
    result = run_cli(["run", "-c", CONFIG_NAME], tmp_path, timeout=15)
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result.stderr)
    lines = plain_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert str(blocker) in lines[0]
    assert blocker.read_text().startswith("a regular file")


def test_status_before_any_run(tmp_path: Path) -> None:
    write_config(tmp_path, fast_config())
    result = run_cli(["status", "-c", CONFIG_NAME], tmp_path, timeout=10)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr_lines
    assert len(lines) == 1, lines
    assert "quantmesh run" in lines[0]
    assert listing(tmp_path) == [CONFIG_NAME]  # no database file created


# ---------------------------------------------------------------- the newcomer path


@dataclass(frozen=True)
class RunRecord:
    """One daemon run, stopped by a signal: how it ended and how long the exit took."""

    daemon: Daemon
    exit_code: int | None
    exit_seconds: float


@dataclass(frozen=True)
class AfterRun:
    """The files after the first run: open client order ids (database and exchange), counts."""

    db_open: set[str]
    exchange_open: set[str]
    counts: dict[str, int]


@dataclass(frozen=True)
class Newcomer:
    sim_state: Path
    run1: RunRecord
    after_run1: AfterRun
    status: Result
    run2: RunRecord


def _after_run(db: Path, sim_state: Path) -> AfterRun:
    if not db.exists():
        return AfterRun(set(), set(), {})
    with read_only(db) as conn:
        rows = conn.execute("SELECT client_order_id FROM orders WHERE status = 'open'")
        db_open = {cid for (cid,) in rows}
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("orders", "trades", "round_trips")
        }
    conn.close()
    exchange_open = {o["client_order_id"] for o in sim_orders(sim_state) if o["status"] == "open"}
    return AfterRun(db_open, exchange_open, counts)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Newcomer:
    """First run until a round trip, SIGINT; ``status``; second run on the same files, SIGTERM.

    Nothing is asserted here: the tests below check what happened, each its own part.
    The exchange secret also sits in the simulated exchange's state path, which the daemon
    logs at start: a secret reaching a log line by accident must come out masked.
    """
    root = tmp_path_factory.mktemp("newcomer")
    sim_state = root / "data" / f"acct-{API_SECRET}" / "sim.db"
    config = changed(
        fast_config(),
        {
            "exchange.api_key": "${QM_TEST_API_KEY}",
            "exchange.secret": API_SECRET,
            "exchange.simulated.state_path": str(sim_state.relative_to(root)),
        },
    )
    path = write_config(root, config)
    env = {"QM_TEST_API_KEY": API_KEY}
    with Daemon(path, root, env) as first:
        first.wait_for("order_placed", 10)
        first.wait_for("round_trip", 30)
        run1 = RunRecord(first, *first.stop(signal.SIGINT, 5))
    after_run1 = _after_run(root / "data" / "quantmesh.db", sim_state)
    status = run_cli(["status", "-c", CONFIG_NAME], root, env, timeout=10)
    with Daemon(path, root, env) as second:
        second.wait_for("reconciled", 10)
        second.wait_for("order_placed", 15, count=3)
        run2 = RunRecord(second, *second.stop(signal.SIGTERM, 5))
    return Newcomer(sim_state, run1, after_run1, status, run2)


def test_first_order_is_placed_within_ten_seconds(newcomer: Newcomer) -> None:
    placed = newcomer.run1.daemon.events("order_placed")
    assert placed, newcomer.run1.daemon.stderr[-3000:]
    assert placed[0]["_at"] <= 10
    assert placed[0]["symbol"] == SYMBOL
    assert placed[0]["client_order_id"].startswith("qm.")


def test_fills_and_round_trips_with_pnl_happen(newcomer: Newcomer) -> None:
    daemon = newcomer.run1.daemon
    fills = daemon.events("order_filled")
    trips = daemon.events("round_trip")
    assert fills, daemon.stderr[-3000:]
    assert trips, daemon.stderr[-3000:]
    names = [e["event"] for e in daemon.events()]
    assert names.index("order_filled") < names.index("round_trip")  # a trip needs a fill
    for trip in trips:
        assert trip["symbol"] == SYMBOL
        # A grid sells one level above the buy: with a 5 USDT step the trip earns money.
        assert Decimal(trip["pnl"]) > 0, trip


def test_sigint_stops_the_daemon_cleanly(newcomer: Newcomer) -> None:
    run1 = newcomer.run1
    assert run1.exit_code == 0, run1.daemon.stderr[-3000:]
    assert run1.exit_seconds <= 5
    assert [e["signal"] for e in run1.daemon.events("signal_received")] == ["SIGINT"]
    assert run1.daemon.events("stopped")
    assert run1.daemon.plain_lines() == []  # only log events, no error line, no traceback
    assert run1.daemon.events("symbol_failed") == []
    assert run1.daemon.stdout == ""


def test_database_records_orders_trades_and_round_trips(newcomer: Newcomer) -> None:
    counts = newcomer.after_run1.counts
    daemon = newcomer.run1.daemon
    assert counts["orders"] > 0
    assert counts["trades"] > 0
    assert counts["round_trips"] > 0
    # Every fill and round trip the log reported was stored, and nothing more.
    assert counts["trades"] == len(daemon.events("order_filled"))
    assert counts["round_trips"] == len(daemon.events("round_trip"))


def test_open_orders_in_database_match_the_exchange_after_stop(newcomer: Newcomer) -> None:
    assert newcomer.after_run1.db_open, "the first run left no open order to resume"
    assert newcomer.after_run1.db_open == newcomer.after_run1.exchange_open


def test_status_prints_a_table(newcomer: Newcomer) -> None:
    result = newcomer.status
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "EXCHANGE", "SYMBOL", "LAST", "PRICE", "INVENTORY", "OPEN", "ORDERS",
        "ROUND", "TRIPS", "REALIZED", "PNL", "TOTAL", "PNL", "FEES", "OTHER", "FEES",
        "CAPITAL", "RETURN", "PCT", "HOLD", "PCT",
    ]  # fmt: skip
    assert len(rows) == 1, result.stdout
    exchange, symbol, price, inventory, open_orders, round_trips, pnl, total, fees, other, *_ = (
        rows[0].split()
    )
    assert (exchange, symbol) == ("simulated", SYMBOL)
    assert int(open_orders) == len(newcomer.after_run1.db_open)
    assert int(round_trips) == newcomer.after_run1.counts["round_trips"]
    expected_pnl = sum(Decimal(e["pnl"]) for e in newcomer.run1.daemon.events("round_trip"))
    assert Decimal(pnl) == expected_pnl
    fills = [e for e in newcomer.run1.daemon.events("order_filled")]
    assert Decimal(fees) == sum(Decimal(e["fee"]) for e in fills)  # the simulator's: USDT
    assert other == "-"
    # total = what the sells brought in less what the buys cost, plus what is held
    cash = sum(
        Decimal(e["amount"]) * Decimal(e["price"]) * (1 if e["side"] == "sell" else -1)
        - Decimal(e["fee"])
        for e in fills
    )
    assert Decimal(total) == cash + Decimal(inventory) * Decimal(price)


def test_second_run_resumes_the_same_grid(newcomer: Newcomer) -> None:
    created = newcomer.run1.daemon.events("grid_created")
    resumed = newcomer.run2.daemon.events("grid_resumed")
    assert len(created) == 1
    assert len(resumed) == 1, newcomer.run2.daemon.stderr[-3000:]
    assert resumed[0]["anchor"] == created[0]["anchor"]
    assert newcomer.run2.daemon.events("grid_created") == []


def test_second_run_adopts_the_open_orders(newcomer: Newcomer) -> None:
    reconciled = newcomer.run2.daemon.events("reconciled")
    assert len(reconciled) == 1, newcomer.run2.daemon.stderr[-3000:]
    assert reconciled[0]["adopted"] > 0
    assert reconciled[0]["adopted"] == len(newcomer.after_run1.db_open)


def test_second_run_places_no_duplicate_order(newcomer: Newcomer) -> None:
    """No order is placed while an order with its client order id is still open."""
    daemon = newcomer.run2.daemon
    placed = daemon.events("order_placed")
    assert placed, "the second run placed nothing: the check below would be empty"
    still_open = set(newcomer.after_run1.db_open)
    for event in daemon.events():
        cid = event.get("client_order_id")
        if event["event"] == "order_placed":
            assert cid not in still_open, f"{cid} placed again while open: {event}"
        elif event["event"] == "order_cancelled":
            still_open.discard(cid)


def test_exchange_never_held_two_open_orders_at_one_grid_price(newcomer: Newcomer) -> None:
    """The design's duplicate: same symbol, side and price open at the same time."""
    orders = sim_orders(newcomer.sim_state)
    assert len(orders) >= len(newcomer.run2.daemon.events("order_placed"))
    spans: dict[tuple[str, str, Decimal], list[tuple[float, float, str]]] = {}
    for o in orders:
        end = float("inf") if o["status"] == "open" else float(o["updated_at"])
        key = (o["symbol"], o["side"], Decimal(o["price"]))
        spans.setdefault(key, []).append((float(o["created_at"]), end, o["client_order_id"]))
    for key, intervals in spans.items():
        intervals.sort()
        latest_end, latest_cid = float("-inf"), ""
        for start, end, cid in intervals:
            assert start >= latest_end, f"{key}: {latest_cid} and {cid} were open at once"
            if end > latest_end:
                latest_end, latest_cid = end, cid


def test_sigterm_stops_the_daemon_cleanly(newcomer: Newcomer) -> None:
    run2 = newcomer.run2
    assert run2.exit_code == 0, run2.daemon.stderr[-3000:]
    assert run2.exit_seconds <= 5
    assert [e["signal"] for e in run2.daemon.events("signal_received")] == ["SIGTERM"]
    assert run2.daemon.plain_lines() == []


def test_order_events_carry_their_grid_level(newcomer: Newcomer) -> None:
    """order_placed / round_trip name their grid level; ``level`` stays the log level."""
    daemon = newcomer.run1.daemon
    events = daemon.events("order_placed") + daemon.events("round_trip")
    assert events
    for event in events:
        assert isinstance(event["grid_level"], int), event
        assert event["level"] == "info", event


def test_secrets_never_reach_the_logs(newcomer: Newcomer) -> None:
    for run in (newcomer.run1, newcomer.run2):
        output = run.daemon.stderr + run.daemon.stdout
        assert API_KEY not in output
        assert API_SECRET not in output
        started = run.daemon.events("sim_exchange_started")
        assert len(started) == 1
        assert "acct-***" in started[0]["state_path"]
    status = newcomer.status.stdout + newcomer.status.stderr
    assert API_KEY not in status
    assert API_SECRET not in status


# ---------------------------------------------------------------- failing symbols


def test_a_symbol_without_market_fails_alone(tmp_path: Path) -> None:
    config = changed(
        fast_config(),
        {"trading.symbols.1": {"symbol": "SOLUSDT", "price_interval": 1, "order_quantity": 30}},
    )
    path = write_config(tmp_path, config)
    with Daemon(path, tmp_path) as daemon:
        failed = daemon.wait_for("symbol_failed", 10)
        placed = daemon.wait_for("order_placed", 10, where=lambda e: e.get("symbol") == SYMBOL)
        code, seconds = daemon.stop(signal.SIGTERM, 5)
    assert len(failed) == 1, daemon.stderr[-3000:]
    assert failed[0]["symbol"] == "SOL/USDT"
    assert "SOL/USDT" in failed[0]["reason"]
    assert placed, daemon.stderr[-3000:]
    assert not any(e.get("symbol") == "SOL/USDT" for e in daemon.events("order_placed"))
    assert code == 0, daemon.stderr[-3000:]  # one symbol still traded: a clean stop
    assert seconds <= 5
    assert_no_traceback(daemon.stderr)


def test_every_symbol_failing_ends_the_daemon(tmp_path: Path) -> None:
    config = changed(
        fast_config(),
        {
            "trading.symbols": [
                {"symbol": "SOLUSDT", "price_interval": 1},
                {"symbol": "XRPUSDT", "price_interval": 0.01},
            ]
        },
    )
    path = write_config(tmp_path, config)
    with Daemon(path, tmp_path) as daemon:
        code = daemon.wait(15)
    assert code == 1, daemon.stderr[-3000:]
    assert_no_traceback(daemon.stderr)
    lines = daemon.plain_lines()
    assert len(lines) == 1, daemon.stderr
    assert "every symbol failed: " in lines[0]
    assert "SOL/USDT" in lines[0]
    assert "XRP/USDT" in lines[0]
    assert {e["symbol"] for e in daemon.events("symbol_failed")} == {"SOL/USDT", "XRP/USDT"}


def test_run_logs_the_config_warnings_at_start(tmp_path: Path) -> None:
    config = changed(
        fast_config(),
        {
            "trading.symbols": [{"symbol": "SOLUSDT", "price_interval": 1}],  # fails at once
            "http": {"enabled": True, "host": "0.0.0.0", "port": 0},
        },
    )
    path = write_config(tmp_path, config)
    with Daemon(path, tmp_path) as daemon:
        code = daemon.wait(15)
    assert code == 1, daemon.stderr[-3000:]
    warnings = [e["warning"] for e in daemon.events("config_warning")]
    assert len(warnings) == 1 and warnings[0].startswith("http.host: 0.0.0.0 is not a loopback")


# ---------------------------------------------------------------- forced exit


def test_sigterm_while_starting_is_a_clean_stop(tmp_path: Path) -> None:
    """systemctl stop right after start: exit 0, no traceback, nothing placed."""
    path = write_config(tmp_path, fast_config())
    with Daemon(path, tmp_path) as daemon:
        time.sleep(0.6)  # imports and start-up, before or just after the service is up
        code, _ = daemon.stop(signal.SIGTERM, 15)
    assert code == 0, daemon.stderr[-3000:]
    assert_no_traceback(daemon.stderr)


def test_second_signal_forces_the_exit(tmp_path: Path) -> None:
    """SIGINT and SIGTERM back to back (distinct signals never merge): the second forces."""
    path = write_config(tmp_path, fast_config())
    with Daemon(path, tmp_path) as daemon:
        assert daemon.wait_for("order_placed", 10), daemon.stderr[-3000:]
        daemon.send(signal.SIGINT)
        daemon.send(signal.SIGTERM)
        code = daemon.wait(5)
    assert code is not None, "still running 5 s after two signals"
    assert daemon.events("forced_exit"), daemon.stderr[-3000:]
    assert code > 0  # a failure exit code, not a death by signal
    assert_no_traceback(daemon.stderr)


# ---------------------------------------------------------------- refused before anything


def test_a_live_exchange_without_credentials_refuses_to_start(tmp_path: Path) -> None:
    write_config(tmp_path, changed(fast_config(), {"exchange.name": "binance"}))
    result = run_cli(["run", "-c", CONFIG_NAME], tmp_path, timeout=15)
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result.stderr)
    lines = plain_lines(result.stderr)
    assert len(lines) == 1 and "exchange." in lines[0], result.stderr
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------- kill -9


def test_a_killed_daemon_resumes_without_placing_an_open_order_again(tmp_path: Path) -> None:
    path = write_config(tmp_path, fast_config())
    with Daemon(path, tmp_path) as first:
        assert first.wait_for("order_placed", 10, count=3), first.stderr[-3000:]
        first.kill()
    open_on_exchange = {
        o["client_order_id"]
        for o in sim_orders(tmp_path / "data" / "sim-exchange.db")
        if o["status"] == "open"
    }
    assert open_on_exchange, "nothing open when killed: the check below would be empty"
    with Daemon(path, tmp_path) as second:
        [reconciled] = second.wait_for("reconciled", 10)
        assert second.wait_for("order_placed", 10), second.stderr[-3000:]
        code, _ = second.stop(signal.SIGINT, 5)
    assert code == 0, second.stderr[-3000:]
    # Every order open at the kill is adopted (recorded or not), none is placed again.
    assert reconciled["adopted"] == len(open_on_exchange)
    placed_again = {e["client_order_id"] for e in second.events("order_placed")}
    cancelled = {e["client_order_id"] for e in second.events("order_cancelled")}
    assert not (placed_again & (open_on_exchange - cancelled)), second.stderr[-3000:]
