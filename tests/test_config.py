"""Settings: YAML -> validated frozen models, interpolation, problem lines, masking."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from quantmesh.config import (
    Settings,
    config_warnings,
    load_settings,
    normalise_symbol,
    parse_settings,
    render_effective,
)
from quantmesh.errors import ConfigError
from quantmesh.secrets import dsn_passwords, mask_dsn, redact

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """
trading:
  symbols:
    - symbol: ETHUSDT
      price_interval: 1
"""


def parse(text: str, env: dict[str, str] | None = None) -> Settings:
    return parse_settings(textwrap.dedent(text), env={} if env is None else env)


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    assert str(caught.value) == "; ".join(caught.value.problems)
    return caught.value.problems


def with_symbol(**fields: object) -> str:
    """MINIMAL with extra keys on the first symbol (values written as YAML flow)."""
    extra = "".join(f"      {key}: {value}\n" for key, value in fields.items())
    return MINIMAL + extra


# ---------------------------------------------------------------- defaults


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


def test_simulated_config_does_not_import_ccxt() -> None:
    code = (
        "import sys; from quantmesh.config import parse_settings; "
        f"parse_settings({MINIMAL!r}, env={{}}); print('ccxt' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "False"


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


# ---------------------------------------------------------------- seed examples

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
            "need the Redis lock and ownership leases to share symbols safely"
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
# between instances: each symbol only under its ownership lease (the Redis lock, halt:
# single_instance would trade on a local lock while Redis is down), and its grid must
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
DATABASES = {
    "sqlite": "database: {type: sqlite, dsn: ./data/quantmesh.db}\n",
    "postgres": "database: {type: postgres, dsn: 'host=db user=quantmesh dbname=quantmesh'}\n",
}


def _refusals(lock: str, database: str, fleet: str | None) -> list[str]:
    if fleet is None:
        return []
    lines = []
    if lock == "no-lock":
        lines.append(
            f"distributed_lock.enabled: must be true: {fleet}, and instances need the Redis "
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


# ---------------------------------------------------------------- warnings


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "quantmesh.example.com"])
def test_an_http_address_off_loopback_without_a_token_is_a_warning(host: str) -> None:
    s = parse(MINIMAL + f"http: {{host: '{host}'}}\n")
    assert config_warnings(s) == [
        (
            f"http.host: {host} is not a loopback address and http.token is empty: "
            "/api/status is readable by anyone who reaches it, and state-changing endpoints "
            "are refused; set http.token (e.g. ${QUANTMESH_HTTP_TOKEN}) or bind to 127.0.0.1"
        )
    ]


@pytest.mark.parametrize(
    "http",
    [
        "{host: 127.0.0.1}",
        "{host: 127.0.0.2}",
        "{host: localhost}",
        "{host: '::1'}",
        "{host: '[::1]'}",
        "{host: 0.0.0.0, token: s3cret}",
        "{host: 0.0.0.0, enabled: false}",
    ],
)
def test_http_on_loopback_or_with_a_token_or_off_is_no_warning(http: str) -> None:
    assert config_warnings(parse(MINIMAL + f"http: {http}\n")) == []


EXPIRY_WARNING = (
    "exchange.name: kraken requests carry no expiry the exchange enforces, and with "
    "distributed_lock.enabled a symbol can move to another instance: a request delayed past "
    "its ownership lease (a frozen process, a slow network) may still execute there after "
    "another instance took the symbol over"
)


def test_a_fleet_on_an_exchange_without_request_expiry_is_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from quantmesh.exchange.ccxt import expiry as ccxt_expiry

    asked: list[str] = []

    def unsupported(exchange_id: str) -> str | None:
        asked.append(exchange_id)
        return None

    monkeypatch.setattr(ccxt_expiry, "expiry_mechanism", unsupported)
    kraken = "exchange: {name: kraken}\n"
    fleet = "instance: {total: 2}\ndistributed_lock: {enabled: true}\n" + DATABASES["postgres"]
    assert config_warnings(parse(kraken + fleet + MINIMAL)) == [EXPIRY_WARNING]
    assert asked == ["kraken"]
    lone_with_lock = "distributed_lock: {enabled: true}\n"  # ownership can still move
    assert config_warnings(parse(kraken + lone_with_lock + MINIMAL)) == [EXPIRY_WARNING]
    assert config_warnings(parse(kraken + MINIMAL)) == []  # alone, no lock: nothing moves
    assert config_warnings(parse(fleet + MINIMAL)) == []  # the in-process simulator
    both = parse(kraken + fleet + MINIMAL + "http: {host: 0.0.0.0}\n")
    assert [w.split(":")[0] for w in config_warnings(both)] == ["http.host", "exchange.name"]


def test_an_exchange_whose_requests_expire_is_no_warning() -> None:
    fleet = "instance: {total: 2}\ndistributed_lock: {enabled: true}\n" + DATABASES["postgres"]
    assert config_warnings(parse("exchange: {name: binance}\n" + fleet + MINIMAL)) == []


def test_the_shipped_configs_have_no_warnings() -> None:
    env = {
        "INSTANCE_ID": "qm-1",
        "BINANCE_API_KEY": "k",
        "BINANCE_SECRET": "s",
        "BINANCE_API_SECRET": "s",
        "QM_SIM_API_KEY": "k",
        "QM_SIM_API_SECRET": "s",
        "EXCHANGE_API_KEY": "k",
        "EXCHANGE_SECRET": "s",
        "POSTGRES_PASSWORD": "p",
        "REDIS_PASSWORD": "r",
        "QUANTMESH_HTTP_TOKEN": "t",
    }
    paths = [
        *sorted((REPO / "config").glob("*.yaml")),
        REPO / "config-ha-example.yaml",
        *sorted((REPO / "deploy" / "compose").glob("quantmesh-*.yaml")),
    ]
    for path in paths:
        assert config_warnings(load_settings(path, env=env)) == [], path


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


# ---------------------------------------------------------------- the default config file


def test_default_config_file_loads() -> None:
    s = load_settings(REPO / "config" / "config.yaml", env={})
    assert s.instance.id == "quantmesh-1"
    assert s.exchange.name == "simulated"
    assert s.database.type == "sqlite"
    assert s.database.dsn.get_secret_value() == "./data/quantmesh.db"
    assert s.distributed_lock.enabled is False
    assert s.exchange.simulated.balances == {"USDT": Decimal(100000)}
    eth, btc = s.symbols
    assert (eth.symbol, eth.price_interval, eth.order_quantity) == (
        "ETH/USDT",
        Decimal(5),
        Decimal(30),
    )
    assert (btc.symbol, btc.price_interval, btc.order_quantity) == (
        "BTC/USDT",
        Decimal(150),
        Decimal(30),
    )
    assert {eth.buy_window_size, eth.sell_window_size, btc.buy_window_size} == {5}
    markets = s.exchange.simulated.markets
    assert markets["ETH/USDT"].price == Decimal(2000)
    assert markets["ETH/USDT"].lot_size == Decimal("0.0001")
    assert markets["BTC/USDT"].price == Decimal(60000)
    assert markets["BTC/USDT"].lot_size == Decimal("0.00001")
    for market in markets.values():
        assert (market.tick_size, market.min_notional) == (Decimal("0.01"), Decimal(5))
        assert (market.feed.type, market.feed.interval) == ("random_walk", 0.2)
        assert market.feed.volatility == 0.001
    assert load_settings(REPO / "config" / "config.yaml", env={"INSTANCE_ID": "a"}).instance.id == (
        "a"
    )


def test_load_settings_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert load_settings(str(path), env={}).symbols[0].symbol == "ETH/USDT"


def test_missing_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert caught.value.problems == [f"{path}: config file not found"]


def test_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, env={})  # a directory
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{tmp_path}: cannot read config file")


def test_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("trading:\n  symbols:\n    - symbol: ETHUSDT\n   price_interval: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    [line] = caught.value.problems
    assert line.startswith(f"{path}: line 4, column 4: invalid YAML: ")


# ---------------------------------------------------------------- interpolation


def test_interpolation_uses_the_variable() -> None:
    s = parse(
        MINIMAL + "database:\n  type: postgres\n  dsn: 'host=db password=${DB_PASSWORD}'\n",
        env={"DB_PASSWORD": "s3cret"},
    )
    assert s.database.dsn.get_secret_value() == "host=db password=s3cret"


def test_interpolation_default_when_unset_or_empty() -> None:
    text = MINIMAL + "http:\n  port: ${PORT:-9200}\n  host: '${HOST:-0.0.0.0}'\n"
    assert parse(text).http.port == 9200
    assert parse(text, env={"PORT": ""}).http.port == 9200
    s = parse(text, env={"PORT": "9300", "HOST": "::1"})
    assert (s.http.port, s.http.host) == (9300, "::1")


def test_interpolation_of_a_set_but_empty_variable_without_default_is_empty() -> None:
    s = parse(MINIMAL + "exchange:\n  api_key: '${KEY}'\n", env={"KEY": ""})
    assert s.exchange.api_key.get_secret_value() == ""


def test_interpolation_escape_and_several_references() -> None:
    s = parse(
        MINIMAL + "distributed_lock:\n  key_prefix: '$${A}-${A}-${B:-b}-$$x'\n", env={"A": "a"}
    )
    assert s.distributed_lock.key_prefix == "${A}-a-b-$$x"


def test_interpolated_numbers_stay_exact() -> None:
    text = with_symbol(order_quantity="${QTY}", min_order_value=0)
    s = parse(text, env={"QTY": "0.30000000000000001"})
    assert s.symbols[0].order_quantity == Decimal("0.30000000000000001")


def test_interpolation_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_TEST_HOST", "10.1.2.3")
    s = parse_settings(MINIMAL + "http:\n  host: ${QM_TEST_HOST}\n")
    assert s.http.host == "10.1.2.3"


def test_instance_id_defaults_to_env_but_the_file_wins() -> None:
    assert parse(MINIMAL, env={"INSTANCE_ID": "node-2"}).instance.id == "node-2"
    assert parse(MINIMAL + "instance:\n", env={"INSTANCE_ID": "n3"}).instance.id == "n3"
    text = MINIMAL + "instance:\n  id: node-9\n"
    assert parse(text, env={"INSTANCE_ID": "node-2"}).instance.id == "node-9"


def test_bad_instance_id_from_env_is_a_problem() -> None:
    assert problems_of(MINIMAL, env={"INSTANCE_ID": "bad id!"}) == [
        "instance.id: must be 1-64 characters from A-Z a-z 0-9 _ . -"
    ]


# ---------------------------------------------------------------- broken configs

SYMBOLS_OK = "trading:\n  symbols:\n    - {symbol: ETHUSDT, price_interval: 1}\n"

BROKEN: list[tuple[str, str, str]] = [
    # (id, yaml, the single expected problem line - or its prefix when it ends with "...")
    ("yaml-syntax", "trading: [\n", "<string>: line 2, column 1: invalid YAML: ..."),
    ("yaml-tab", "trading:\n\tsymbols: []\n", "<string>: line 2, column 1: invalid YAML: ..."),
    ("two-documents", SYMBOLS_OK + "---\n" + SYMBOLS_OK, "<string>: line 4, column 1: ..."),
    ("top-level-list", "- a\n- b\n", "<string>: the top level must be a mapping of sections, ..."),
    ("top-level-scalar", "hello\n", "<string>: the top level must be a mapping of sections, ..."),
    ("empty", "# nothing\n", "<string>: the configuration is empty (trading.symbols is required)"),
    ("no-trading", "http: {port: 1}\n", "trading: required: list the symbols to trade under ..."),
    ("section-wrong-type", SYMBOLS_OK + "database: [1]\n", "database: must be a mapping ..."),
    (
        "int-wrong-type",
        with_symbol(buy_window_size="ten"),
        "trading.symbols[0].buy_window_size: must be a whole number (got 'ten')",
    ),
    (
        "int-fraction",
        with_symbol(buy_window_size=1.5),
        (
            "trading.symbols[0].buy_window_size: must be a whole number, without a fractional part"
            " (got 1.5)"
        ),
    ),
    (
        "bool-for-int",
        with_symbol(buy_window_size="true"),
        "trading.symbols[0].buy_window_size: must be a number, not true/false",
    ),
    (
        "decimal-wrong-type",
        with_symbol(order_quantity="lots"),
        "trading.symbols[0].order_quantity: must be a number (got 'lots')",
    ),
    (
        "bool-wrong-type",
        SYMBOLS_OK + "database:\n  buffer_enabled: maybe\n",
        "database.buffer_enabled: must be true or false (got 'maybe')",
    ),
    (
        "negative-interval",
        MINIMAL.replace("price_interval: 1", "price_interval: -1"),
        "trading.symbols[0].price_interval: must be greater than 0 (got -1)",
    ),
    (
        "zero-interval",
        MINIMAL.replace("price_interval: 1", "price_interval: 0"),
        "trading.symbols[0].price_interval: must be greater than 0 (got 0)",
    ),
    (
        "nan-interval",
        MINIMAL.replace("price_interval: 1", "price_interval: .nan"),
        "trading.symbols[0].price_interval: must be a finite number (got NaN)",
    ),
    (
        "no-interval",
        "trading:\n  symbols:\n    - symbol: ETHUSDT\n",
        "trading.symbols[0].price_interval: required for arithmetic spacing",
    ),
    (
        "buy-window-zero",
        with_symbol(buy_window_size=0),
        "trading.symbols[0].buy_window_size: must be at least 1 (got 0)",
    ),
    (
        "sell-window-zero",
        with_symbol(sell_window_size=0),
        "trading.symbols[0].sell_window_size: must be at least 1 (got 0)",
    ),
    (
        "order-quantity-zero",
        with_symbol(order_quantity=0),
        "trading.symbols[0].order_quantity: must be greater than 0 (got 0)",
    ),
    (
        "order-quantity-negative",
        with_symbol(order_quantity=-30),
        "trading.symbols[0].order_quantity: must be greater than 0 (got -30)",
    ),
    (
        "order-below-min-value",
        with_symbol(order_quantity=5),
        "trading.symbols[0].order_quantity: must be at least min_order_value (10)",
    ),
    (
        "max-position-below-order",
        with_symbol(max_position=10),
        "trading.symbols[0].max_position: must be at least order_quantity (30)",
    ),
    (
        "unknown-database-type",
        SYMBOLS_OK + "database:\n  type: oracle\n",
        "database.type: must be one of sqlite, postgres, mysql (got 'oracle')",
    ),
    (
        "database-type-typo",
        SYMBOLS_OK + "database:\n  type: postgresql\n  dsn: host=x\n",
        (
            "database.type: must be one of sqlite, postgres, mysql (got 'postgresql')"
            " (did you mean 'postgres'?)"
        ),
    ),
    (
        "postgres-without-dsn",
        SYMBOLS_OK + "database:\n  type: postgres\n",
        "database.dsn: required for database type postgres",
    ),
    (
        "dsn-scheme-mismatch",
        SYMBOLS_OK + "database:\n  dsn: postgresql://u:pw@h/db\n",
        "database.dsn: URL scheme 'postgresql' does not match database.type 'sqlite'",
    ),
    (
        "idle-above-open",
        SYMBOLS_OK + "database:\n  max_open_conns: 5\n  max_idle_conns: 6\n",
        "database.max_idle_conns: must be at most max_open_conns (5)",
    ),
    (
        "negative-buffer-size",
        SYMBOLS_OK + "database:\n  buffer_size: -1\n",
        "database.buffer_size: must be at least 1 (got -1)",
    ),
    (
        "zero-retry-interval",
        SYMBOLS_OK + "database:\n  retry_interval: 0\n",
        "database.retry_interval: must be greater than 0 (got 0)",
    ),
    (
        "unknown-exchange",
        SYMBOLS_OK + "exchange:\n  name: binanse\n",
        (
            "exchange.name: unknown exchange 'binanse' (did you mean 'binance'?);"
            " use 'simulated' or a ccxt exchange id"
        ),
    ),
    (
        "missing-env-var",
        SYMBOLS_OK + "database:\n  type: postgres\n  dsn: host=db password=${DB_PASSWORD}\n",
        (
            "database.dsn: environment variable DB_PASSWORD is not set"
            " (export it or use ${DB_PASSWORD:-default})"
        ),
    ),
    (
        "malformed-reference",
        SYMBOLS_OK + "http:\n  host: ${HOST:default}\n",
        "http.host: malformed variable reference '${HOST:default}' (write ${NAME} or ...",
    ),
    (
        "unterminated-reference",
        SYMBOLS_OK + "http:\n  host: ${HOST\n",
        "http.host: malformed variable reference '${' ...",
    ),
    (
        "duplicate-symbol",
        (
            "trading:\n  symbols:\n    - {symbol: ETHUSDT, price_interval: 1}\n"
            "    - {symbol: ETH/USDT, price_interval: 2}\n"
        ),
        "trading.symbols[1].symbol: duplicate of trading.symbols[0] (ETH/USDT)",
    ),
    (
        "unsplittable-symbol",
        "trading:\n  symbols:\n    - {symbol: FOOBAR, price_interval: 1}\n",
        "trading.symbols[0].symbol: cannot split 'FOOBAR' into base and quote currency: ...",
    ),
    (
        "symbol-missing",
        "trading:\n  symbols:\n    - {price_interval: 1}\n",
        "trading.symbols[0].symbol: required (e.g. symbol: ETHUSDT)",
    ),
    (
        "unknown-symbol-key",
        with_symbol(price_intervl=1),
        "trading.symbols[0].price_intervl: unknown key (did you mean 'price_interval'?)",
    ),
    (
        "unknown-section",
        SYMBOLS_OK + "databse:\n  type: sqlite\n",
        "databse: unknown key (did you mean 'database'?)",
    ),
    (
        "unknown-key-without-suggestion",
        SYMBOLS_OK + "redis:\n  zzz: 1\n",
        "redis.zzz: unknown key",
    ),
    (
        "empty-symbols",
        "trading:\n  symbols: []\n",
        "trading.symbols: must not be empty: list at least one symbol",
    ),
    ("symbols-not-a-list", "trading:\n  symbols: ETHUSDT\n", "trading.symbols: must be a list ..."),
    (
        "lower-above-upper",
        with_symbol(lower_price=3000, upper_price=1000),
        "trading.symbols[0].lower_price: must be less than upper_price (1000)",
    ),
    (
        "lower-equals-upper",
        with_symbol(lower_price=1000, upper_price=1000),
        "trading.symbols[0].lower_price: must be less than upper_price (1000)",
    ),
    (
        "geometric-without-ratio",
        "trading:\n  symbols:\n    - {symbol: ETHUSDT, spacing: geometric}\n",
        "trading.symbols[0].grid_ratio: required for geometric spacing (e.g. 0.005 for 0.5 %)",
    ),
    (
        "grid-ratio-too-big",
        "trading:\n  symbols:\n    - {symbol: ETHUSDT, spacing: geometric, grid_ratio: 1}\n",
        "trading.symbols[0].grid_ratio: must be less than 1 (got 1)",
    ),
    (
        "bad-spacing",
        with_symbol(spacing="linear"),
        "trading.symbols[0].spacing: must be one of arithmetic, geometric (got 'linear')",
    ),
    (
        "bad-fallback-mode",
        SYMBOLS_OK + "distributed_lock:\n  fallback_mode: failopen\n",
        "distributed_lock.fallback_mode: must be one of halt, single_instance (got 'failopen')",
    ),
    (
        "zero-lock-ttl",
        SYMBOLS_OK + "distributed_lock:\n  ttl: {place: 0}\n",
        "distributed_lock.ttl.place: must be greater than 0 (got 0)",
    ),
    (
        "redis-addr-without-port",
        SYMBOLS_OK + "redis:\n  addr: localhost\n",
        "redis.addr: must be host:port, e.g. localhost:6379 (got 'localhost')",
    ),
    (
        "redis-addr-bad-port",
        SYMBOLS_OK + "redis:\n  addr: 'localhost:99999'\n",
        "redis.addr: must be host:port, e.g. localhost:6379 (got 'localhost:99999')",
    ),
    (
        "redis-url-scheme",
        SYMBOLS_OK + "redis:\n  url: http://h:6379\n",
        "redis.url: must be a redis://, rediss:// or unix:// URL",
    ),
    (
        "fleet-without-lock",
        SYMBOLS_OK + "instance: {total: 2}\ndatabase: {type: postgres, dsn: 'postgresql://h/db'}\n",
        (
            "distributed_lock.enabled: must be true: instance.total is 2, and instances "
            "need the Redis lock and ownership leases to share symbols safely"
        ),
    ),
    (
        "fleet-on-sqlite",
        SYMBOLS_OK + "instance: {total: 3}\ndistributed_lock: {enabled: true}\n",
        (
            "database.type: must be postgres or mysql: instance.total is 3, and a SQLite "
            "file is not shared between instances"
        ),
    ),
    (
        "fleet-single-instance-fallback",
        SYMBOLS_OK
        + "instance: {total: 2}\ndatabase: {type: postgres, dsn: 'postgresql://h/db'}\n"
        + "distributed_lock: {enabled: true, fallback_mode: single_instance}\n",
        (
            "distributed_lock.fallback_mode: must be halt: instance.total is 2, and "
            "single_instance is only safe when one instance runs"
        ),
    ),
    (
        "index-not-below-total",
        SYMBOLS_OK + "instance:\n  index: 2\n  total: 2\n",
        "instance.index: must be less than instance.total (2)",
    ),
    (
        "bad-role",
        SYMBOLS_OK + "instance:\n  role: slave\n",
        "instance.role: must be one of master, standby (got 'slave')",
    ),
    (
        "http-port-range",
        SYMBOLS_OK + "http:\n  port: 70000\n",
        "http.port: must be at most 65535 (got 70000)",
    ),
    (
        "bad-log-level",
        SYMBOLS_OK + "logging:\n  level: verbose\n",
        "logging.level: must be one of debug, info, warning, error (got 'verbose')",
    ),
    (
        "fee-rate-too-high",
        SYMBOLS_OK + "exchange:\n  simulated:\n    fee_rate: 0.5\n",
        "exchange.simulated.fee_rate: must be less than 0.1 (got 0.5)",
    ),
    (
        "negative-balance",
        SYMBOLS_OK + "exchange:\n  simulated:\n    balances: {usdt: -1}\n",
        "exchange.simulated.balances.USDT: must be at least 0 (got -1)",
    ),
    (
        "market-without-price",
        SYMBOLS_OK + "exchange:\n  simulated:\n    markets:\n      ETHUSDT: {tick_size: 0.01}\n",
        "exchange.simulated.markets['ETH/USDT'].price: required",
    ),
    (
        "market-bad-symbol",
        SYMBOLS_OK + "exchange:\n  simulated:\n    markets:\n      FOOBAR: {price: 1}\n",
        "exchange.simulated.markets.FOOBAR: cannot split 'FOOBAR' into base and quote ...",
    ),
    (
        "market-defined-twice",
        SYMBOLS_OK + "exchange:\n  simulated:\n    markets:\n"
        "      ETHUSDT: {price: 1}\n      ETH/USDT: {price: 2}\n",
        "exchange.simulated.markets['ETH/USDT']: ETH/USDT is defined twice",
    ),
    (
        "csv-feed-without-path",
        SYMBOLS_OK + "exchange:\n  simulated:\n    markets:\n"
        "      ETHUSDT: {price: 1, feed: {type: csv}}\n",
        "exchange.simulated.markets['ETH/USDT'].feed.path: required for a csv feed",
    ),
    (
        "unknown-key-below-a-mapping",
        SYMBOLS_OK + "exchange:\n  simulated:\n    markets:\n"
        "      ETHUSDT: {price: 1, feed: {intervall: 1}}\n",
        (
            "exchange.simulated.markets['ETH/USDT'].feed.intervall: unknown key"
            " (did you mean 'interval'?)"
        ),
    ),
    (
        "duplicate-yaml-key",
        SYMBOLS_OK + "database:\n  type: sqlite\ndatabase:\n  type: postgres\n",
        "database: duplicate key (line 6 repeats the one on line 4)",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_config_gives_one_clear_line(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    if expected.endswith("..."):
        assert problems[0].startswith(expected[:-3]), problems[0]
    else:
        assert problems[0] == expected


def test_several_problems_are_all_reported() -> None:
    text = with_symbol(buy_window_size=0, sell_window_size=0) + "http:\n  port: -1\n"
    assert problems_of(text) == [
        "trading.symbols[0].buy_window_size: must be at least 1 (got 0)",
        "trading.symbols[0].sell_window_size: must be at least 1 (got 0)",
        "http.port: must be at least 0 (got -1)",
    ]


def test_missing_env_vars_are_all_reported() -> None:
    text = SYMBOLS_OK + "database:\n  type: postgres\n  dsn: '${U}:${P}@tcp(h)/db'\n"
    assert [line.split(" (")[0] for line in problems_of(text)] == [
        "database.dsn: environment variable U is not set",
        "database.dsn: environment variable P is not set",
    ]


def test_secret_values_are_not_echoed_in_problems() -> None:
    problems = problems_of(SYMBOLS_OK + "exchange:\n  api_key: 918273645\n")
    assert problems == ["exchange.api_key: must be a string"]
    problems = problems_of(SYMBOLS_OK + "redis:\n  url: 'http://:hunter2@h'\n")
    assert not any("hunter2" in line for line in problems)


def test_number_for_string_suggests_quotes() -> None:
    assert problems_of(SYMBOLS_OK + "distributed_lock:\n  key_prefix: 12\n") == [
        "distributed_lock.key_prefix: must be a string (got 12; put it in quotes)"
    ]


# ---------------------------------------------------------------- exactness and immutability


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


# ---------------------------------------------------------------- rendering


SECRETFUL = (
    """
exchange:
  name: binance
  api_key: APIKEY-111
  secret: SECRET-222
  password: PASSPHRASE-333
  options: {apiKey: OPTKEY-444, defaultType: spot}
database:
  type: postgres
  dsn: postgresql+asyncpg://quantmesh:DBPASS-555@db.example:5432/quantmesh
redis:
  url: redis://default:REDISURL-666@redis.example:6379/0
  password: REDISPASS-777
"""
    + SYMBOLS_OK
)

SECRETS = [
    "APIKEY-111",
    "SECRET-222",
    "PASSPHRASE-333",
    "OPTKEY-444",
    "DBPASS-555",
    "REDISURL-666",
    "REDISPASS-777",
]


def test_render_effective_masks_every_secret() -> None:
    s = parse(SECRETFUL)
    out = render_effective(s)
    for secret in SECRETS:
        assert secret not in out
        assert secret not in repr(s)
        assert secret not in str(s)
    assert "dsn: postgresql+asyncpg://quantmesh:***@db.example:5432/quantmesh" in out
    assert "url: redis://default:***@redis.example:6379/0" in out
    assert "api_key: '***'" in out
    assert "defaultType: spot" in out


@pytest.mark.parametrize(
    "dsn",
    [
        "host=localhost user=quantmesh password=DBPASS-555 dbname=quantmesh",
        "quantmesh:DBPASS-555@tcp(localhost:3306)/quantmesh?charset=utf8mb4",
    ],
)
def test_render_effective_masks_go_style_dsns(dsn: str) -> None:
    kind = "postgres" if dsn.startswith("host") else "mysql"
    s = parse(SYMBOLS_OK + f"database:\n  type: {kind}\n  dsn: '{dsn}'\n")
    out = render_effective(s)
    assert "DBPASS-555" not in out
    assert dsn.replace("DBPASS-555", "***") in out


def test_render_effective_round_trips() -> None:
    s = load_settings(REPO / "config" / "config.yaml", env={})
    out = render_effective(s)
    assert parse_settings(out, env={}) == s
    assert "price_interval: 5\n" in out
    assert "volatility: 0.001\n" in out


def test_render_effective_shows_every_section() -> None:
    out = render_effective(parse(MINIMAL))
    top = [line.split(":")[0] for line in out.splitlines() if line and not line[0].isspace()]
    assert top == [
        "instance",
        "exchange",
        "trading",
        "database",
        "distributed_lock",
        "coordination",
        "redis",
        "logging",
        "http",
    ]


# ---------------------------------------------------------------- quantmesh.secrets


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql+asyncpg://u:p%40ss@h:5432/db", "postgresql+asyncpg://u:***@h:5432/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("mysql+aiomysql://u@h/db", "mysql+aiomysql://u@h/db"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("postgresql://h/db?user=u&password=pw&x=1", "postgresql://h/db?user=u&password=***&x=1"),
        ("host=h user=u password=pw dbname=d", "host=h user=u password=*** dbname=d"),
        ("host=h password = 'a b\\'c' dbname=d", "host=h password = *** dbname=d"),
        ("host=h sslpassword=pw", "host=h sslpassword=***"),
        ("user=me@corp host=h password=pw", "user=me@corp host=h password=***"),
        ("u:pw@tcp(h:3306)/db?charset=utf8mb4", "u:***@tcp(h:3306)/db?charset=utf8mb4"),
        ("u:p@ss:w@tcp(h:3306)/db", "u:***@tcp(h:3306)/db"),
        ("u:pw@/db", "u:***@/db"),
        ("u@tcp(h:3306)/db", "u@tcp(h:3306)/db"),
        ("./data/quantmesh.db", "./data/quantmesh.db"),
        ("sqlite+aiosqlite:///./data/q.db", "sqlite+aiosqlite:///./data/q.db"),
        ("", ""),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_dsn_passwords_finds_raw_and_decoded() -> None:
    assert dsn_passwords("postgresql://u:p%40ss@h/db") == ["p%40ss", "p@ss"]
    assert dsn_passwords("host=h password='a b'") == ["a b"]
    assert dsn_passwords("./data/q.db") == []


def test_redact() -> None:
    text = "connect password=hunter2 token=abc hunter2abc"
    assert redact(text, ["hunter2", "", "hunter2abc"]) == "connect password=*** token=abc ***"
    assert redact("nothing here", []) == "nothing here"


def test_an_empty_section_takes_its_defaults() -> None:
    s = parse(MINIMAL + "redis:\n  # url: redis://...\ndistributed_lock:\n  ttl:\n")
    assert s.redis.addr == "localhost:6379"
    assert s.distributed_lock.ttl.place == 5.0


def test_an_empty_value_is_not_silently_defaulted() -> None:
    assert problems_of(with_symbol(buy_window_size="")) == [
        "trading.symbols[0].buy_window_size: must be a whole number (got null)"
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("interval", "0", "must be greater than 0 (got 0)"),
        ("interval", ".inf", "must be a finite number (got inf)"),
        ("volatility", "-0.1", "must be at least 0 (got -0.1)"),
        ("speed", "0", "must be greater than 0 (got 0)"),
        ("seed", "1.5", "must be a whole number, without a fractional part (got 1.5)"),
    ],
)
def test_bad_feed_values(key: str, value: str, message: str) -> None:
    text = SYMBOLS_OK + (
        "exchange:\n  simulated:\n    markets:\n"
        f"      ETHUSDT: {{price: 1, feed: {{{key}: {value}}}}}\n"
    )
    assert problems_of(text) == [f"exchange.simulated.markets['ETH/USDT'].feed.{key}: {message}"]
