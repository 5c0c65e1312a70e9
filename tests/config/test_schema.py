"""The settings schema (``quantmesh.config.schema``): defaults, the seed's examples, the
ways to run one or several instances, exact decimals, frozen models."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from quantmesh.config import normalise_symbol
from quantmesh.grid.state import GridParams

from .support import DATABASES, MINIMAL, parse, problems_of


def test_minimal_config_gets_every_default() -> None:
    s = parse(MINIMAL)
    assert s.instance.id == "quantmesh-1"
    assert (s.instance.role, s.instance.index, s.instance.total) == ("master", 0, 1)
    assert s.exchange.name == "simulated"
    assert s.exchange.api_key.get_secret_value() == ""
    assert s.exchange.simulated.fee_rate == Decimal("0.001")
    assert s.exchange.simulated.balances == {"USDT": Decimal(100000)}
    assert s.exchange.simulated.markets == {}
    sym = s.trading.symbols[0]
    assert sym.symbol == "ETH/USDT"
    assert sym.spacing == "arithmetic"
    assert sym.price_interval == Decimal(1)
    assert sym.order_quantity == Decimal(30)
    assert (sym.buy_window_size, sym.sell_window_size) == (10, 10)
    assert sym.min_order_value == Decimal(10)
    assert sym.anchor_price is sym.lower_price is sym.upper_price is sym.max_position is None
    assert sym.cancel_hysteresis == 2
    assert s.trading.cancel_on_exit is False
    assert s.trading.cancel_timeout == 30.0
    assert s.trading.shutdown_grace == 5.0
    db = s.database
    assert (db.type, db.dsn.get_secret_value()) == ("sqlite", "./data/quantmesh.db")
    assert (db.max_open_conns, db.max_idle_conns, db.conn_max_lifetime) == (10, 5, 1800.0)
    assert (db.buffer_enabled, db.buffer_size, db.retry_interval) == (True, 10000, 10.0)
    assert db.journal_path == Path("./data/journal.jsonl")
    assert db.auto_migrate is True
    lock = s.distributed_lock
    assert (lock.enabled, lock.type, lock.fallback_mode) == (False, "redis", "halt")
    assert (lock.health_check_interval, lock.granularity) == (10.0, "level")
    assert lock.key_prefix == "quantmesh:lock:"
    assert (lock.ttl.place, lock.ttl.cancel, lock.ttl.reconcile) == (5.0, 3.0, 30.0)
    assert (s.redis.url, s.redis.addr, s.redis.db, s.redis.pool_size) == (
        None,
        "localhost:6379",
        0,
        10,
    )
    assert (s.logging.level, s.logging.format) == ("info", "auto")
    assert (s.http.enabled, s.http.host, s.http.port) == (True, "127.0.0.1", 9321)


def test_symbols_helper_and_interval() -> None:
    s = parse(
        """
        trading:
          symbols:
            - {symbol: ETHUSDT, price_interval: 1}
            - {symbol: btc/usdt, spacing: geometric, grid_ratio: 0.005}
        """
    )
    assert [sym.symbol for sym in s.symbols] == ["ETH/USDT", "BTC/USDT"]
    assert isinstance(s.symbols, list)
    assert [sym.interval for sym in s.symbols] == [Decimal(1), Decimal("0.005")]


def test_a_symbol_produces_its_grid_params_from_every_grid_setting() -> None:
    s = parse(
        """
        trading:
          symbols:
            - symbol: ETHUSDT
              spacing: geometric
              grid_ratio: 0.005
              order_quantity: 40
              buy_window_size: 4
              sell_window_size: 5
              min_order_value: 12
              anchor_price: 2000
              lower_price: 1500
              upper_price: 2500
              max_position: 400
              cancel_hysteresis: 3
            - {symbol: BTCUSDT, price_interval: 100}
        """
    )
    eth, btc = (symbol.grid_params() for symbol in s.symbols)
    assert eth == GridParams(
        symbol="ETH/USDT",
        interval=Decimal("0.005"),
        order_quantity=Decimal(40),
        buy_window=4,
        sell_window=5,
        spacing="geometric",
        min_order_value=Decimal(12),
        anchor_price=Decimal(2000),
        lower_price=Decimal(1500),
        upper_price=Decimal(2500),
        max_position=Decimal(400),
        cancel_hysteresis=3,
    )
    assert btc == GridParams(
        symbol="BTC/USDT",
        interval=Decimal(100),
        order_quantity=Decimal(30),
        buy_window=10,
        sell_window=10,
        min_order_value=Decimal(10),
    )


def test_market_keys_are_normalised_and_a_symbol_without_market_is_not_a_config_error() -> None:
    s = parse(
        """
        exchange:
          simulated:
            markets:
              ETHUSDT: {price: 2000}
        trading:
          symbols:
            - {symbol: ETH/USDT, price_interval: 1}
            - {symbol: BTCUSDT, price_interval: 25}
        """
    )
    assert list(s.exchange.simulated.markets) == ["ETH/USDT"]
    market = s.exchange.simulated.markets["ETH/USDT"]
    assert (market.price, market.feed.type, market.feed.seed) == (
        Decimal(2000),
        "random_walk",
        None,
    )
    assert [sym.symbol for sym in s.symbols] == ["ETH/USDT", "BTC/USDT"]


def test_real_exchange_name_is_accepted() -> None:
    s = parse(MINIMAL + "exchange:\n  name: binance\n  sandbox: true\n")
    assert (s.exchange.name, s.exchange.sandbox) == ("binance", True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ETHUSDT", "ETH/USDT"),
        ("ETH/USDT", "ETH/USDT"),
        ("eth/usdt", "ETH/USDT"),
        (" btcusdt ", "BTC/USDT"),
        ("BTCFDUSD", "BTC/FDUSD"),
        ("ETHBUSD", "ETH/BUSD"),
        ("USDCUSDT", "USDC/USDT"),
        ("ETHBTC", "ETH/BTC"),
        ("BNBETH", "BNB/ETH"),
        ("BTCUSD", "BTC/USD"),
        ("1000PEPEUSDT", "1000PEPE/USDT"),
        ("BTCEUR", "BTC/EUR"),
    ],
)
def test_normalise_symbol(raw: str, expected: str) -> None:
    assert normalise_symbol(raw) == expected


@pytest.mark.parametrize("raw", ["FOOBAR", "USDT", "", "ETH/", "/USDT", "ETH-USDT", "A/B/C"])
def test_normalise_symbol_refuses_what_it_cannot_split(raw: str) -> None:
    with pytest.raises(ValueError, match="BASE/QUOTE"):
        normalise_symbol(raw)


SEED_FRAGMENTS = [
    """
    database:
      type: "sqlite"
      dsn: "./data/quantmesh.db"
    """,
    """
    database:
      type: "postgres"
      dsn: "host=localhost user=quantmesh password=secret dbname=quantmesh"
      max_open_conns: 100
      max_idle_conns: 10
    """,
    """
    database:
      type: "mysql"
      dsn: "quantmesh:secret@tcp(localhost:3306)/quantmesh?charset=utf8mb4"
    """,
    """
    database:
      max_open_conns: 100
      max_idle_conns: 10
      conn_max_lifetime: 1800
    """,
    """
    distributed_lock:
      fallback_mode: "single_instance"
      health_check_interval: 10
    """,
    """
    database:
      buffer_enabled: true
      buffer_size: 10000
      retry_interval: 10
    """,
    """
    instance:
      role: "master"
    """,
    """
    instance:
      role: "standby"
    """,
]


# A standby shares symbols with masters: it needs the shared lock and database (below).
FLEET = """
distributed_lock: {enabled: true}
database: {type: postgres, dsn: "postgresql://quantmesh@localhost/quantmesh"}
"""


def _with_fleet(fragment: str) -> str:
    return textwrap.dedent(fragment) + (FLEET if "standby" in fragment else "") + MINIMAL


@pytest.mark.parametrize("fragment", SEED_FRAGMENTS)
def test_seed_fragments_load_as_written(fragment: str) -> None:
    s = parse(_with_fleet(fragment))
    assert s.symbols[0].symbol == "ETH/USDT"


def test_a_standby_without_the_shared_lock_and_database_is_refused() -> None:
    assert problems_of(textwrap.dedent(SEED_FRAGMENTS[7]) + MINIMAL) == [
        (
            "distributed_lock.enabled: must be true: instance.role is standby, and instances "
            "need the shared lock and ownership leases to share symbols safely"
        ),
        (
            "database.type: must be postgres or mysql: instance.role is standby, and a SQLite "
            "file is not shared between instances"
        ),
    ]


def test_dynamic_mode_refuses_a_standby() -> None:
    text = "instance: {role: standby}\ncoordination: {mode: dynamic}\n" + FLEET + MINIMAL
    assert problems_of(text) == [
        (
            "instance.role: must be master in mode dynamic: every instance takes a share of the "
            "symbols (mode static has standbys)"
        )
    ]


def test_a_lease_shorter_than_its_check_interval_is_refused() -> None:
    assert problems_of("coordination: {lease_ttl: 2, check_interval: 3}\n" + MINIMAL) == [
        "coordination.check_interval: must be shorter than lease_ttl (2 s)"
    ]


# Every way to run one or several instances: which are refused at start, and why. A
# declared fleet (instance.total above 1, a standby, dynamic assignment) shares symbols
# between instances: each symbol only under its ownership lease (the shared lock, halt:
# single_instance would trade on a local lock while its server is down), and its grid must
# follow it from one instance to the next (a shared database; SQLite is one file per
# instance). A lone instance (the defaults) is accepted in every combination: with the
# lock it takes part in ownership, and at run time it never takes a symbol to or from
# an unshared database (tests/coordination/test_databases.py).
SHAPES = {
    "alone": ("", None),
    "total-2": ("instance: {total: 2}\n", "instance.total is 2"),
    "standby": ("instance: {role: standby}\n", "instance.role is standby"),
    "dynamic": ("coordination: {mode: dynamic}\n", "coordination.mode is dynamic"),
}


LOCKS = {
    "no-lock": "distributed_lock: {enabled: false}\n",
    "halt": "distributed_lock: {enabled: true, fallback_mode: halt}\n",
    "single-instance": "distributed_lock: {enabled: true, fallback_mode: single_instance}\n",
}


def _refusals(lock: str, database: str, fleet: str | None) -> list[str]:
    if fleet is None:
        return []
    lines = []
    if lock == "no-lock":
        lines.append(
            f"distributed_lock.enabled: must be true: {fleet}, and instances need the shared "
            "lock and ownership leases to share symbols safely"
        )
    if lock == "single-instance":
        lines.append(
            f"distributed_lock.fallback_mode: must be halt: {fleet}, and single_instance is "
            "only safe when one instance runs"
        )
    if database == "sqlite":
        lines.append(
            f"database.type: must be postgres or mysql: {fleet}, and a SQLite file is not "
            "shared between instances"
        )
    return lines


FLEET_CASES = [
    (f"{shape}/{lock}/{database}", SHAPES[shape][0] + LOCKS[lock] + DATABASES[database],
     _refusals(lock, database, SHAPES[shape][1]))
    for shape in SHAPES
    for lock in LOCKS
    for database in DATABASES
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in FLEET_CASES], ids=[c[0] for c in FLEET_CASES]
)
def test_every_way_to_run_instances_is_accepted_or_refused_with_its_reason(
    text: str, expected: list[str]
) -> None:
    if not expected:
        assert parse(text + MINIMAL).symbols[0].symbol == "ETH/USDT"
    else:
        assert problems_of(text + MINIMAL) == expected


# Runs ``quantmesh check-config`` on each file given, in one interpreter (the command
# configures logging for its process, so not in the test process), and prints the exit
# codes and outputs as JSON.
_CHECK_EACH = """
import contextlib, io, json, sys
from quantmesh.cli import main
results = []
for path in sys.argv[1:]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check-config", path])
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def test_every_refused_way_to_run_is_refused_by_check_config_with_one_line_each(
    tmp_path: Path,
) -> None:
    refused = [case for case in FLEET_CASES if case[2]]
    assert len(refused) == 15  # 3 fleet shapes x 3 locks x 2 databases, but halt+postgres
    paths = []
    for name, text, _ in refused:
        path = tmp_path / (name.replace("/", "_") + ".yaml")
        path.write_text(text + MINIMAL)
        paths.append(str(path))
    done = subprocess.run(
        [sys.executable, "-c", _CHECK_EACH, *paths],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results = json.loads(done.stdout)
    for (name, _, expected), (code, out, err) in zip(refused, results, strict=True):
        assert (code, out, err.splitlines()) == (2, "", expected), name


def test_the_seed_single_instance_fallback_loads_with_the_lock_on_one_sqlite_instance() -> None:
    text = (
        textwrap.dedent(SEED_FRAGMENTS[4])
        + "  enabled: true\n"
        + textwrap.dedent(SEED_FRAGMENTS[0])
    )
    s = parse(text + MINIMAL)
    assert (s.distributed_lock.enabled, s.distributed_lock.fallback_mode) == (
        True,
        "single_instance",
    )
    assert s.database.type == "sqlite" and s.fleet is None


def test_seed_values_are_kept() -> None:
    pg = parse(textwrap.dedent(SEED_FRAGMENTS[1]) + MINIMAL).database
    assert pg.type == "postgres"
    assert pg.dsn.get_secret_value().startswith("host=localhost user=quantmesh")
    assert (pg.max_open_conns, pg.max_idle_conns) == (100, 10)
    mysql = parse(textwrap.dedent(SEED_FRAGMENTS[2]) + MINIMAL).database
    assert mysql.type == "mysql"
    assert mysql.dsn.get_secret_value().endswith("?charset=utf8mb4")
    lock = parse(textwrap.dedent(SEED_FRAGMENTS[4]) + MINIMAL).distributed_lock
    assert (lock.fallback_mode, lock.health_check_interval) == ("single_instance", 10.0)
    assert parse(_with_fleet(SEED_FRAGMENTS[7])).instance.role == "standby"


def test_seed_static_assignment_keys_load_with_the_required_interval() -> None:
    seed = """
    trading:
      symbols:
        - symbol: "ETHUSDT"
        - symbol: "BTCUSDT"
    """
    # As written, the fragment lacks the grid step: one clear line per symbol.
    assert problems_of(seed) == [
        "trading.symbols[0].price_interval: required for arithmetic spacing",
        "trading.symbols[1].price_interval: required for arithmetic spacing",
    ]
    completed = textwrap.dedent(seed).replace('"\n', '"\n      price_interval: 1\n')
    assert [sym.symbol for sym in parse(completed).symbols] == ["ETH/USDT", "BTC/USDT"]


def test_decimals_are_exact() -> None:
    s = parse(
        """
        exchange:
          simulated:
            fee_rate: 0.001
            markets:
              ETHUSDT: {price: 2000.01, tick_size: 0.01, lot_size: 0.0001}
        trading:
          symbols:
            - symbol: ETHUSDT
              price_interval: 0.1
              order_quantity: 30.3
              min_order_value: "0.30000000000000001"
              anchor_price: 1e-7
        """
    )
    sym = s.symbols[0]
    assert sym.price_interval == Decimal("0.1")
    assert str(sym.price_interval) == "0.1"
    assert sym.order_quantity == Decimal("30.3")
    assert sym.min_order_value == Decimal("0.30000000000000001")
    assert sym.anchor_price == Decimal("1E-7")
    assert s.exchange.simulated.fee_rate == Decimal("0.001")
    market = s.exchange.simulated.markets["ETH/USDT"]
    assert (market.price, market.tick_size, market.lot_size) == (
        Decimal("2000.01"),
        Decimal("0.01"),
        Decimal("0.0001"),
    )
    assert all(
        isinstance(v, Decimal) for v in (sym.price_interval, sym.order_quantity, market.price)
    )


def test_settings_are_frozen() -> None:
    s = parse(MINIMAL)
    with pytest.raises(ValidationError, match="frozen"):
        s.trading = s.trading  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        s.symbols[0].price_interval = Decimal(2)  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        s.database.dsn = s.database.dsn  # type: ignore[misc]
    assert isinstance(s.trading.symbols, tuple)


def test_an_empty_section_takes_its_defaults() -> None:
    s = parse(MINIMAL + "redis:\n  # url: redis://...\ndistributed_lock:\n  ttl:\n")
    assert s.redis.addr == "localhost:6379"
    assert s.distributed_lock.ttl.place == 5.0
