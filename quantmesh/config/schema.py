"""The settings schema: frozen pydantic models, one per YAML section.

Reading and interpolation live in ``source``, loading in ``load``, error formatting in
``problems``; this module is only the shape of the settings and the checks on values. The
``risk``, ``notifications`` and lock-server sections (``lock_servers``) have modules of
their own; ``fields`` holds the
section base and the value types they share.
"""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from quantmesh.config.fields import (
    INSTANCE_ID,
    Count,
    NonNegativeDecimal,
    NonNegativeFloat,
    NonNegativeInt,
    NonNegativeSeconds,
    PositiveDecimal,
    PositiveFloat,
    Seconds,
    Section,
)
from quantmesh.config.lock_servers import (
    DATABASE_LOCK_PREFIX_MAX,
    DATABASE_LOCKS,
    DistributedLockSettings,
    EtcdSettings,
    RedisSettings,
)
from quantmesh.config.notifications import NotificationSettings
from quantmesh.config.problems import FieldProblems, suggest
from quantmesh.config.risk import InstanceRiskSettings, RiskSettings
from quantmesh.grid.state import GridParams, Spacing

# Quote currencies recognised at the end of a compact symbol (ETHUSDT); longest first.
QUOTE_CURRENCIES: tuple[str, ...] = tuple(
    sorted(
        {
            "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "DAI", "BTC", "ETH", "BNB",
            "EUR", "USD", "TRY", "BRL", "JPY", "GBP", "AUD", "CAD", "CHF", "RUB", "UAH",
            "IDR", "ZAR", "PLN", "ARS", "MXN", "KRW",
        },
        key=lambda quote: (-len(quote), quote),
    )
)  # fmt: skip
_CURRENCY = re.compile(r"[A-Z0-9]+")
# The grid parameters whose setting has another name; every other one has its own.
_GRID_SETTING_NAMES = {"buy_window": "buy_window_size", "sell_window": "sell_window_size"}


def normalise_symbol(symbol: str) -> str:
    """``ETHUSDT`` or ``eth/usdt`` -> ``ETH/USDT``; raises ValueError when it cannot split."""
    text = symbol.strip().upper()
    if "/" in text:
        base, _, quote = text.partition("/")
        if _CURRENCY.fullmatch(base) and _CURRENCY.fullmatch(quote):
            return f"{base}/{quote}"
        raise ValueError(f"invalid symbol {symbol!r}: write it as BASE/QUOTE, e.g. ETH/USDT")
    if _CURRENCY.fullmatch(text):
        for quote in QUOTE_CURRENCIES:
            if text.endswith(quote) and len(text) > len(quote):
                return f"{text[: -len(quote)]}/{quote}"
    raise ValueError(
        f"cannot split {symbol!r} into base and quote currency: write it as BASE/QUOTE"
    )


class InstanceSettings(Section):
    id: str = "quantmesh-1"
    role: Literal["master", "standby"] = "master"
    index: NonNegativeInt = 0
    total: Count = 1

    @property
    def standby(self) -> bool:
        """A standby trades a symbol only while no live master claims it."""
        return self.role == "standby"

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not INSTANCE_ID.fullmatch(value):
            raise ValueError("must be 1-64 characters from A-Z a-z 0-9 _ . -")
        return value

    @model_validator(mode="after")
    def _check_index(self) -> InstanceSettings:
        if self.index >= self.total:
            raise FieldProblems([(("index",), f"must be less than instance.total ({self.total})")])
        return self


class FeedSettings(Section):
    type: Literal["random_walk", "csv"] = "random_walk"
    interval: Seconds = 0.2
    volatility: NonNegativeFloat = 0.0005  # stdev of the relative step per tick
    seed: int | None = None
    path: Path | None = None
    speed: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _check_path(self) -> FeedSettings:
        if self.type == "csv" and self.path is None:
            raise FieldProblems([(("path",), "required for a csv feed")])
        if self.type != "csv" and self.path is not None:
            raise FieldProblems([(("path",), "only used by a csv feed (type: csv)")])
        return self


class SimulatedMarketSettings(Section):
    price: PositiveDecimal
    tick_size: PositiveDecimal = Decimal("0.01")
    lot_size: PositiveDecimal = Decimal("0.00001")
    min_notional: NonNegativeDecimal = Decimal(5)
    feed: FeedSettings = FeedSettings()


def _upper_currencies(value: Any) -> Any:
    """Balances' currencies in capitals (``usdt`` is ``USDT``)."""
    if isinstance(value, dict):
        return {str(key).strip().upper(): amount for key, amount in value.items()}
    return value


Balances = Annotated[dict[str, NonNegativeDecimal], BeforeValidator(_upper_currencies)]


def _normalise_market_keys(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for key, market in value.items():
        try:
            symbol = normalise_symbol(str(key))
        except ValueError as exc:
            problems.append(((str(key),), str(exc)))
            continue
        if symbol in out:
            problems.append(((str(key),), f"{symbol} is defined twice"))
        out[symbol] = market
    if problems:
        raise FieldProblems(problems)
    return out


class SimulatedExchangeSettings(Section):
    state_path: Path = Path("./data/sim-exchange.db")
    fee_rate: Annotated[NonNegativeDecimal, Field(lt=Decimal("0.1"))] = Decimal("0.001")
    balances: Balances = Field(default_factory=lambda: {"USDT": Decimal(100000)})
    markets: Annotated[
        dict[str, SimulatedMarketSettings], BeforeValidator(_normalise_market_keys)
    ] = Field(default_factory=dict)
    # touch: a resting order fills when the price reaches it; through: only beyond it
    fill: Literal["touch", "through"] = "touch"


class PaperExchangeSettings(Section):
    """``exchange.name: paper``: a venue's public prices and trades, our own fills."""

    source: str | None = None  # the ccxt id of the venue (binance, okx, ...)
    # through: a resting order fills when a trade prints strictly beyond its price;
    # touch: already when one prints at its price
    fill: Literal["touch", "through"] = "through"
    state_path: Path = Path("./data/paper-exchange.db")
    balances: Balances = Field(default_factory=lambda: {"USDT": Decimal(10000)})

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str | None) -> str | None:
        if value is None:
            return value
        import ccxt.pro  # slow to import: only when paper trading is configured

        known: list[str] = list(ccxt.pro.exchanges)
        if value not in known:
            raise ValueError(
                f"unknown exchange {value!r}{suggest(value, known)}; use a ccxt exchange id "
                "with WebSocket support (e.g. binance)"
            )
        return value


class ExchangeSettings(Section):
    name: str = "simulated"
    api_key: SecretStr = SecretStr("")
    secret: SecretStr = SecretStr("")
    password: SecretStr = SecretStr("")
    sandbox: bool = False
    # Free-form, passed to ccxt; may hold credentials, so kept out of repr().
    options: dict[str, Any] = Field(default_factory=dict, repr=False)
    urls: dict[str, Any] = Field(default_factory=dict, repr=False)
    simulated: SimulatedExchangeSettings = SimulatedExchangeSettings()
    paper: PaperExchangeSettings = PaperExchangeSettings()
    # ccxt exchanges and paper's source only (ignored by 'simulated'):
    request_timeout: Seconds = 10.0  # one REST call; then its outcome is unknown
    # ccxt's request spacing (seconds per unit of request weight); None: the exchange's
    # published limit as ccxt knows it. Lower it only for an account with higher limits.
    rate_limit: Seconds | None = None
    streams: bool = True  # watch_ticker/watch_orders when the exchange has them
    price_stale_after: Seconds = 30.0  # no price this long: the symbol is stale
    price_poll_interval: Seconds = 2.0  # fetch_ticker polling (no stream, or it failed)
    order_poll_interval: Seconds = 2.0  # order polling when there is no order stream
    order_resync_interval: Seconds = 30.0  # REST check of open orders despite the stream
    stream_failures_before_polling: Count = 3
    stream_retry_after: Seconds = 60.0  # polling this long before trying a stream again
    reconnect_max_delay: Seconds = 30.0  # cap of the exponential backoff
    client_order_id_param: str = "clientOrderId"  # ccxt param carrying our order id
    # as_is, or alphanumeric for exchanges refusing "." and "-" (auto: by exchange id)
    client_order_id_style: Literal["auto", "as_is", "alphanumeric"] = "auto"
    verify_credentials: bool = True  # a private call at start: bad keys stop the daemon

    @model_validator(mode="after")
    def _check_ccxt_timings(self) -> ExchangeSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.price_poll_interval >= self.price_stale_after:
            problems.append(
                (
                    ("price_poll_interval",),
                    f"must be less than price_stale_after ({self.price_stale_after:g})",
                )
            )
        if not self.client_order_id_param.strip():
            problems.append((("client_order_id_param",), "must not be empty"))
        if self.name == "paper":
            problems.extend(self._paper_problems())
        if problems:
            raise FieldProblems(problems)
        return self

    def _paper_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Paper trading reads public data only: a source, and no keys."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.paper.source is None:
            why = "required with exchange.name paper: a ccxt exchange id, e.g. binance"
            problems.append((("paper", "source"), why))
        keys = "must be empty with exchange.name paper (it reads public data only)"
        for key in ("api_key", "secret", "password"):
            value: SecretStr = getattr(self, key)
            if value.get_secret_value():
                problems.append(((key,), f"{keys}; to trade live, set exchange.name instead"))
        return problems

    @field_validator("name")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        if value in ("simulated", "paper"):
            return value
        import ccxt  # slow to import: only when a real exchange is configured

        known: list[str] = list(ccxt.exchanges)
        if value not in known:
            raise ValueError(
                f"unknown exchange {value!r}{suggest(value, [*known, 'simulated', 'paper'])};"
                " use 'simulated', 'paper' or a ccxt exchange id"
            )
        return value


class SymbolSettings(Section):
    symbol: str
    spacing: Spacing = "arithmetic"
    price_interval: PositiveDecimal | None = None
    grid_ratio: Annotated[PositiveDecimal, Field(lt=1)] | None = None
    order_quantity: PositiveDecimal = Decimal(30)
    buy_window_size: Count = 10
    sell_window_size: Count = 10
    min_order_value: NonNegativeDecimal = Decimal(10)
    anchor_price: PositiveDecimal | None = None
    lower_price: PositiveDecimal | None = None
    upper_price: PositiveDecimal | None = None
    max_position: PositiveDecimal | None = None
    cancel_hysteresis: NonNegativeInt = 2
    risk: RiskSettings = RiskSettings()

    @field_validator("symbol")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return normalise_symbol(value)

    @model_validator(mode="after")
    def _check_grid(self) -> SymbolSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.spacing == "arithmetic":
            if self.price_interval is None:
                problems.append((("price_interval",), "required for arithmetic spacing"))
            if self.grid_ratio is not None:
                problems.append((("grid_ratio",), "only used with spacing: geometric"))
        else:
            if self.grid_ratio is None:
                problems.append(
                    (("grid_ratio",), "required for geometric spacing (e.g. 0.005 for 0.5 %)")
                )
            if self.price_interval is not None:
                problems.append((("price_interval",), "only used with spacing: arithmetic"))
        low, high = self.lower_price, self.upper_price
        if low is not None and high is not None and low >= high:
            problems.append((("lower_price",), f"must be less than upper_price ({high})"))
        if self.order_quantity < self.min_order_value:
            problems.append(
                (("order_quantity",), f"must be at least min_order_value ({self.min_order_value})")
            )
        if self.max_position is not None and self.max_position < self.order_quantity:
            problems.append(
                (("max_position",), f"must be at least order_quantity ({self.order_quantity})")
            )
        if problems:
            raise FieldProblems(problems)
        return self

    @property
    def interval(self) -> Decimal:
        """The grid step: ``price_interval`` (arithmetic) or ``grid_ratio`` (geometric)."""
        step = self.price_interval if self.spacing == "arithmetic" else self.grid_ratio
        assert step is not None  # guaranteed by _check_grid
        return step

    def grid_params(self) -> GridParams:
        """This symbol's grid: each ``GridParams`` field from the setting of that name (or
        of the name ``_GRID_SETTING_NAMES`` gives), so a new grid setting is a field here
        and one there."""
        values = {
            param.name: getattr(self, _GRID_SETTING_NAMES.get(param.name, param.name))
            for param in dataclasses.fields(GridParams)
        }
        return GridParams(**values)


class TradingSettings(Section):
    cancel_on_exit: bool = False
    cancel_timeout: Seconds = 30.0  # the cancels of cancel_on_exit, all symbols at once
    shutdown_grace: Seconds = 5.0
    reconcile_interval: Seconds = 60.0  # our open orders checked against the exchange
    symbols: tuple[SymbolSettings, ...]

    @field_validator("symbols")
    @classmethod
    def _not_empty(cls, value: tuple[SymbolSettings, ...]) -> tuple[SymbolSettings, ...]:
        # Not Field(min_length=1): that also fires, confusingly, when every item is invalid.
        if not value:
            raise ValueError("must not be empty: list at least one symbol")
        return value

    @model_validator(mode="after")
    def _unique_symbols(self) -> TradingSettings:
        first: dict[str, int] = {}
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for index, symbol in enumerate(self.symbols):
            if symbol.symbol in first:
                where = f"trading.symbols[{first[symbol.symbol]}]"
                problems.append(
                    (("symbols", index, "symbol"), f"duplicate of {where} ({symbol.symbol})")
                )
            else:
                first[symbol.symbol] = index
        if problems:
            raise FieldProblems(problems)
        return self


_DSN_SCHEMES = {"sqlite": ("sqlite",), "postgres": ("postgres",), "mysql": ("mysql", "mariadb")}


class DatabaseSettings(Section):
    type: Literal["sqlite", "postgres", "mysql"] = "sqlite"
    dsn: SecretStr = SecretStr("./data/quantmesh.db")
    max_open_conns: Count = 10
    max_idle_conns: NonNegativeInt = 5
    conn_max_lifetime: NonNegativeSeconds = 1800.0
    buffer_enabled: bool = True
    buffer_size: Count = 10000
    retry_interval: Seconds = 10.0
    journal_path: Path = Path("./data/journal.jsonl")
    auto_migrate: bool = True
    connect_timeout: Seconds = 10.0  # opening one connection
    statement_timeout: Seconds = 30.0  # one statement (PostgreSQL) or transaction (MySQL)

    @model_validator(mode="after")
    def _check(self) -> DatabaseSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        dsn = self.dsn.get_secret_value()
        if not dsn.strip():
            problems.append((("dsn",), "must not be empty"))
        elif self.type != "sqlite" and "dsn" not in self.model_fields_set:
            problems.append((("dsn",), f"required for database type {self.type}"))
        scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else None
        if scheme is not None and not scheme.startswith(_DSN_SCHEMES[self.type]):
            problems.append(
                (("dsn",), f"URL scheme {scheme!r} does not match database.type {self.type!r}")
            )
        if self.max_idle_conns > self.max_open_conns:
            problems.append(
                (("max_idle_conns",), f"must be at most max_open_conns ({self.max_open_conns})")
            )
        if problems:
            raise FieldProblems(problems)
        return self


class CoordinationSettings(Section):
    """Who trades which symbol when several instances run (``coordination/``).

    ``static``: each instance trades its own ``trading.symbols`` (a standby those no live
    master claims); ``dynamic``: the symbols are shared out over the live instances by
    rendezvous hashing. Either way a symbol is traded only under its ownership lease.
    """

    mode: Literal["static", "dynamic"] = "static"
    lease_ttl: Seconds = 10.0  # an owner that stops renewing loses its symbols after this
    check_interval: Seconds = 2.0  # how often a waiting instance tries to take a symbol

    @model_validator(mode="after")
    def _check_timing(self) -> CoordinationSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.lease_ttl < 1.0:
            problems.append((("lease_ttl",), "must be at least 1 second"))
        elif self.check_interval >= self.lease_ttl:
            problems.append(
                (("check_interval",), f"must be shorter than lease_ttl ({self.lease_ttl:g} s)")
            )
        if problems:
            raise FieldProblems(problems)
        return self


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class HttpSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[NonNegativeInt, Field(le=65535)] = 9321
    token: SecretStr = SecretStr("")  # bearer token for /api/*; /metrics and /healthz stay open


class Settings(Section):
    instance: InstanceSettings = InstanceSettings()
    exchange: ExchangeSettings = ExchangeSettings()
    trading: TradingSettings
    database: DatabaseSettings = DatabaseSettings()
    distributed_lock: DistributedLockSettings = DistributedLockSettings()
    coordination: CoordinationSettings = CoordinationSettings()
    redis: RedisSettings = RedisSettings()
    etcd: EtcdSettings = EtcdSettings()
    logging: LoggingSettings = LoggingSettings()
    http: HttpSettings = HttpSettings()
    notifications: NotificationSettings = NotificationSettings()
    risk: InstanceRiskSettings = InstanceRiskSettings()

    @property
    def fleet(self) -> str | None:
        """Why this instance is one of several (``None`` when it runs alone)."""
        if self.instance.total > 1:
            return f"instance.total is {self.instance.total}"
        if self.instance.standby:
            return "instance.role is standby"
        if self.coordination.mode == "dynamic":
            return "coordination.mode is dynamic"
        return None

    @model_validator(mode="after")
    def _check_fleet(self) -> Settings:
        """Several instances (``instance.total`` > 1, a standby, dynamic assignment) are safe
        only on the shared lock and a shared database: refuse the settings that would let
        them fail open (two instances on one symbol, or a symbol moving away from its grid).

        An instance alone by these keys is accepted with any lock and database: with the
        lock on it takes part in ownership, and at run time an instance on SQLite never
        claims a symbol another live instance lists, nor does any symbol move to or from it
        (``coordination.coordinator``)."""
        fleet = self.fleet
        if fleet is None:
            return self
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if not self.distributed_lock.enabled:
            why = "instances need the shared lock and ownership leases to share symbols safely"
            problems.append((("distributed_lock", "enabled"), f"must be true: {fleet}, and {why}"))
        elif self.distributed_lock.fallback_mode == "single_instance":
            why = "single_instance is only safe when one instance runs"
            problems.append(
                (("distributed_lock", "fallback_mode"), f"must be halt: {fleet}, and {why}")
            )
        if self.database.type == "sqlite":
            why = "a SQLite file is not shared between instances"
            problems.append(
                (("database", "type"), f"must be postgres or mysql: {fleet}, and {why}")
            )
        if self.instance.standby and self.coordination.mode == "dynamic":
            why = "every instance takes a share of the symbols (mode static has standbys)"
            problems.append((("instance", "role"), f"must be master in mode dynamic: {why}"))
        if problems:
            raise FieldProblems(problems)
        return self

    @model_validator(mode="after")
    def _check_lock_server(self) -> Settings:
        """The chosen lock server can be reached: etcd needs its members listed; a database
        lock needs the instance's database to be that server (not SQLite, not the other
        kind), and lock names that fit its table."""
        lock = self.distributed_lock
        if not lock.enabled:
            return self
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if lock.type == "etcd" and not self.etcd.endpoints:
            fix = "list the members' client addresses, e.g. [10.0.0.1:2379, 10.0.0.2:2379]"
            problems.append(
                (("etcd", "endpoints"), f"required for distributed_lock.type etcd: {fix}")
            )
        elif lock.type in DATABASE_LOCKS:
            problems.extend(self._database_lock_problems(lock.type))
        if problems:
            raise FieldProblems(problems)
        return self

    def _database_lock_problems(self, kind: str) -> list[tuple[tuple[str | int, ...], str]]:
        """Why the locks cannot live in this instance's database (``distributed_lock.type``
        postgres or mysql): they are rows of its ``lock_leases`` table, on its DSN."""
        database = self.database.type
        other = "redis or etcd"
        if database == "sqlite":
            why = (
                f"the locks would live in the database, and database.type is sqlite: a SQLite "
                f"file cannot be shared by a fleet; set database.type: {kind} and database.dsn "
                f"to the fleet's {kind} server, or pick distributed_lock.type {other}"
            )
            return [(("distributed_lock", "type"), why)]
        if database != kind:
            why = (
                f"the locks live in this instance's own database, and database.type is "
                f"{database}; set distributed_lock.type: {database} (or database.type: {kind} "
                f"and database.dsn), or pick {other}"
            )
            return [(("distributed_lock", "type"), why)]
        prefix = self.distributed_lock.key_prefix
        if len(prefix) > DATABASE_LOCK_PREFIX_MAX:
            why = (
                f"at most {DATABASE_LOCK_PREFIX_MAX} characters with distributed_lock.type "
                f"{kind} (got {len(prefix)}): a lock's name, prefix and key, must fit the "
                "255 characters of lock_leases.name"
            )
            return [(("distributed_lock", "key_prefix"), why)]
        return []

    @model_validator(mode="after")
    def _check_risk(self) -> Settings:
        """Limits across symbols add quote amounts: they need one quote currency."""
        if not self.risk.limits().any:
            return self
        quotes = sorted({entry.symbol.partition("/")[2] for entry in self.trading.symbols})
        if len(quotes) > 1:
            why = f"the symbols are quoted in {', '.join(quotes)}; trade one quote currency"
            key = "max_daily_loss" if self.risk.max_daily_loss is not None else "max_total_position"
            raise FieldProblems([(("risk", key), f"adds amounts across symbols: {why}")])
        return self

    @property
    def symbols(self) -> list[SymbolSettings]:
        """The configured symbols, ``.symbol`` in ``BASE/QUOTE`` form."""
        return list(self.trading.symbols)
