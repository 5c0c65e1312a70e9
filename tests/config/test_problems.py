"""One humane line per problem (``quantmesh.config.problems``): broken configs."""

from __future__ import annotations

import pytest

from .support import MINIMAL, SYMBOLS_OK, problems_of, with_symbol

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
            " use 'simulated', 'paper' or a ccxt exchange id"
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
            "need the shared lock and ownership leases to share symbols safely"
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
        "etcd-without-endpoints",
        SYMBOLS_OK + "distributed_lock: {enabled: true, type: etcd}\n",
        (
            "etcd.endpoints: required for distributed_lock.type etcd: list the members' "
            "client addresses, e.g. [10.0.0.1:2379, 10.0.0.2:2379]"
        ),
    ),
    (
        "etcd-lock-type-misspelt",
        SYMBOLS_OK + "distributed_lock: {enabled: true, type: etdc}\n",
        (
            "distributed_lock.type: must be one of redis, etcd, postgres, mysql (got 'etdc') "
            "(did you mean 'etcd'?)"
        ),
    ),
    (
        "database-lock-on-sqlite",
        SYMBOLS_OK + "distributed_lock: {enabled: true, type: postgres}\n",
        (
            "distributed_lock.type: the locks would live in the database, and database.type "
            "is sqlite: a SQLite file cannot be shared by a fleet; set database.type: postgres "
            "and database.dsn to the fleet's postgres server, or pick distributed_lock.type "
            "redis or etcd"
        ),
    ),
    (
        "postgres-lock-on-mysql",
        SYMBOLS_OK
        + "distributed_lock: {enabled: true, type: postgres}\n"
        + "database: {type: mysql, dsn: 'mysql://qm:PW-SECRET-1@db/qm'}\n",
        (
            "distributed_lock.type: the locks live in this instance's own database, and "
            "database.type is mysql; set distributed_lock.type: mysql (or database.type: "
            "postgres and database.dsn), or pick redis or etcd"
        ),
    ),
    (
        "mysql-lock-on-postgres",
        SYMBOLS_OK
        + "distributed_lock: {enabled: true, type: mysql}\n"
        + "database: {type: postgres, dsn: 'postgresql://qm:PW-SECRET-1@db/qm'}\n",
        (
            "distributed_lock.type: the locks live in this instance's own database, and "
            "database.type is postgres; set distributed_lock.type: postgres (or database.type: "
            "mysql and database.dsn), or pick redis or etcd"
        ),
    ),
    (
        "database-lock-prefix-too-long",
        SYMBOLS_OK
        + f"distributed_lock: {{enabled: true, type: mysql, key_prefix: '{'q' * 101}'}}\n"
        + "database: {type: mysql, dsn: 'qm:pw@tcp(db:3306)/qm'}\n",
        (
            "distributed_lock.key_prefix: at most 100 characters with distributed_lock.type "
            "mysql (got 101): a lock's name, prefix and key, must fit the 255 characters of "
            "lock_leases.name"
        ),
    ),
    (
        "etcd-endpoint-without-port",
        SYMBOLS_OK + "etcd: {endpoints: [etcd-1]}\n",
        "etcd.endpoints: must be host:port, e.g. 10.0.0.1:2379 (got 'etcd-1')",
    ),
    (
        "etcd-endpoint-with-credentials",
        SYMBOLS_OK + "etcd: {endpoints: ['http://root:hunter2@etcd-1:2379']}\n",
        "etcd.endpoints: must carry no user or password: set etcd.username and etcd.password",
    ),
    (
        "etcd-endpoint-not-http",
        SYMBOLS_OK + "etcd: {endpoints: ['grpc://etcd-1:2379']}\n",
        "etcd.endpoints: must be host:port or an http(s):// URL (got grpc://)",
    ),
    (
        "etcd-user-without-password",
        SYMBOLS_OK + "etcd: {endpoints: ['etcd-1:2379'], username: quantmesh}\n",
        "etcd.password: required when etcd.username is set",
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


def test_secret_values_are_not_echoed_in_problems() -> None:
    problems = problems_of(SYMBOLS_OK + "exchange:\n  api_key: 918273645\n")
    assert problems == ["exchange.api_key: must be a string"]
    problems = problems_of(SYMBOLS_OK + "redis:\n  url: 'http://:hunter2@h'\n")
    assert not any("hunter2" in line for line in problems)
    problems = problems_of(SYMBOLS_OK + "http:\n  token: 5551234987\n")
    assert problems == ["http.token: must be a string"]


def test_number_for_string_suggests_quotes() -> None:
    assert problems_of(SYMBOLS_OK + "distributed_lock:\n  key_prefix: 12\n") == [
        "distributed_lock.key_prefix: must be a string (got 12; put it in quotes)"
    ]


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
