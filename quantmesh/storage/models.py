"""The database schema: portable SQLAlchemy Core tables on one ``MetaData``.

One schema serves SQLite, PostgreSQL and MySQL/MariaDB. Prices and amounts use
``ExactDecimal``: ``NUMERIC(36, 18)`` where the database has an exact decimal type, and
the exact decimal text on SQLite (whose ``NUMERIC`` is a float). Because of SQLite, never
compare, order or aggregate ``ExactDecimal`` columns in SQL; do it in Python (the
repository does).

Every table carries ``exchange`` so several exchanges and instances can share one
database; the unique constraints are the keys idempotent writes are matched on.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

PRECISION: Final = 36
SCALE: Final = 18
_QUANTUM: Final = Decimal(1).scaleb(-SCALE)
_LIMIT: Final = Decimal(10) ** (PRECISION - SCALE)

# String lengths: MySQL needs one for every indexed VARCHAR; these fit utf8mb4 keys.
EXCHANGE_LEN: Final = 32
SYMBOL_LEN: Final = 64
ID_LEN: Final = 64
SIDE_LEN: Final = 4
STATUS_LEN: Final = 16
CURRENCY_LEN: Final = 16
_DECIMAL_TEXT_LEN: Final = PRECISION + 4  # digits, sign, point, spare

# A 64-bit surrogate key; SQLite only auto-increments an "INTEGER PRIMARY KEY".
_ID_TYPE: Final = BigInteger().with_variant(Integer(), "sqlite")


def check_decimal(value: Decimal) -> Decimal:
    """Return ``value`` if ``NUMERIC(36, 18)`` holds it exactly.

    Raises ``ValueError`` when it does not, ``TypeError`` for anything but a ``Decimal``.
    """
    if not isinstance(value, Decimal):
        raise TypeError(f"expected a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"cannot store non-finite decimal {value}")
    with localcontext() as ctx:
        ctx.prec = PRECISION + SCALE + 8
        try:
            quantized = value.quantize(_QUANTUM)
        except InvalidOperation:
            raise ValueError(f"decimal {value} does not fit NUMERIC(36, 18)") from None
        if quantized != value:
            raise ValueError(f"decimal {value} has more than {SCALE} decimal places")
        if abs(quantized) >= _LIMIT:
            raise ValueError(f"decimal {value} does not fit NUMERIC(36, 18)")
    return value


class ExactDecimal(TypeDecorator[Decimal]):
    """``Decimal`` stored exactly: ``NUMERIC(36, 18)``, or its text on SQLite.

    Values that ``NUMERIC(36, 18)`` cannot hold exactly are refused on every backend
    (rather than rounded silently by PostgreSQL/MySQL), so all backends behave alike.
    """

    impl = Numeric(PRECISION, SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(_DECIMAL_TEXT_LEN))
        return dialect.type_descriptor(Numeric(PRECISION, SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        check_decimal(value)
        if dialect.name == "sqlite":
            return format(value, "f")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        if isinstance(value, str | int):
            return Decimal(value)
        if isinstance(value, float):  # a row written by another tool as REAL
            return Decimal(repr(value))
        raise ValueError(f"cannot read a decimal from {type(value).__name__}")


metadata: Final = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _id() -> Column[int]:
    """The surrogate primary key every table starts with."""
    return Column("id", _ID_TYPE, primary_key=True, autoincrement=True)


def _exchange() -> Column[str]:
    return Column("exchange", String(EXCHANGE_LEN), nullable=False)


def _symbol() -> Column[str]:
    return Column("symbol", String(SYMBOL_LEN), nullable=False)


def _decimal(name: str, *, nullable: bool = False) -> Column[Decimal]:
    return Column(name, ExactDecimal(), nullable=nullable)


orders: Final = Table(
    "orders",
    metadata,
    _id(),
    _exchange(),
    Column("client_order_id", String(ID_LEN), nullable=False),
    _symbol(),
    Column("side", String(SIDE_LEN), nullable=False),
    _decimal("price"),
    _decimal("amount"),
    _decimal("filled"),
    Column("status", String(STATUS_LEN), nullable=False),
    Column("exchange_order_id", String(ID_LEN), nullable=False),
    Column("created_at", Double(), nullable=False),
    Column("updated_at", Double(), nullable=False),
    # Fence of the level lock the order was placed under (issue 3); NULL when none.
    Column("lock_fence", BigInteger(), nullable=True),
    UniqueConstraint("exchange", "client_order_id"),
    Index(None, "exchange", "symbol", "status"),
)

# One fill (the seed's "trade").
#
# ``level_applied`` says whether the fill's effect on its grid level was stored with it
# (a grid write under an accepted fence). A fill stored without its level (a former
# owner's buffered write replayed under a stale fence keeps the fill, not the level) is
# ``False`` until the symbol's owner applies it; the index finds those cheaply.
trades: Final = Table(
    "trades",
    metadata,
    _id(),
    _exchange(),
    _symbol(),
    Column("trade_id", String(ID_LEN), nullable=False),
    Column("side", String(SIDE_LEN), nullable=False),
    _decimal("price"),
    _decimal("amount"),
    _decimal("fee"),
    Column("fee_currency", String(CURRENCY_LEN), nullable=False),
    Column("client_order_id", String(ID_LEN), nullable=False),
    Column("exchange_order_id", String(ID_LEN), nullable=False),
    Column("ts", Double(), nullable=False),
    # rows stored before migration 0003 were all written with their levels
    Column("level_applied", Boolean(), nullable=False, server_default=true()),
    UniqueConstraint("exchange", "symbol", "trade_id"),
    Index(None, "exchange", "symbol", "ts"),
    Index(None, "exchange", "symbol", "level_applied"),
)

round_trips: Final = Table(
    "round_trips",
    metadata,
    _id(),
    _exchange(),
    _symbol(),
    Column("level", Integer(), nullable=False),
    Column("cycle", BigInteger(), nullable=False),
    _decimal("amount"),
    _decimal("buy_cost"),
    _decimal("sell_proceeds"),
    _decimal("pnl"),
    Column("closed_at", Double(), nullable=False),
    UniqueConstraint("exchange", "symbol", "level", "cycle"),
)

grids: Final = Table(
    "grids",
    metadata,
    _id(),
    _exchange(),
    _symbol(),
    _decimal("anchor"),
    Column("spacing", String(16), nullable=True),
    _decimal("interval", nullable=True),
    Column("fence", BigInteger(), nullable=False),
    _decimal("last_price", nullable=True),
    Column("last_price_at", Double(), nullable=True),
    Column("updated_at", Double(), nullable=False),
    UniqueConstraint("exchange", "symbol"),
)

grid_levels: Final = Table(
    "grid_levels",
    metadata,
    _id(),
    _exchange(),
    _symbol(),
    Column("level_index", Integer(), nullable=False),
    _decimal("holding"),
    _decimal("cost"),
    Column("cycle", BigInteger(), nullable=False),
    UniqueConstraint("exchange", "symbol", "level_index"),
    ForeignKeyConstraint(
        ["exchange", "symbol"], ["grids.exchange", "grids.symbol"], ondelete="CASCADE"
    ),
)


# What people ask of a symbol (``quantmesh.control``): its desired state and the audit.
CONTROL_LEN: Final = 16  # a control mode or action: "stop_buys", "cancel-all"
ACTOR_LEN: Final = 128
INSTANCE_LEN: Final = 64  # instance.id: 1 to 64 characters
REASON_LEN: Final = 1000  # wider than the HTTP layer lets in: nothing is cut short here


def _control_columns() -> list[Column[Any]]:
    """What both control tables hold first: whose symbol, what was asked, by whom, on
    which instance (the fields of a ``Desired`` but its time, which each names its own
    way)."""
    return [
        _id(),
        _exchange(),
        _symbol(),
        Column("mode", String(CONTROL_LEN), nullable=False),
        Column("cancel_orders", Boolean(), nullable=False),
        Column("reason", String(REASON_LEN), nullable=False),
        Column("actor", String(ACTOR_LEN), nullable=False),
        Column("instance", String(INSTANCE_LEN), nullable=False),
    ]


# The desired state a person set for a symbol (one row per exchange and symbol; a symbol
# without a row is active), set at ``set_at``.
symbol_controls: Final = Table(
    "symbol_controls",
    metadata,
    *_control_columns(),
    Column("set_at", Double(), nullable=False),
    UniqueConstraint("exchange", "symbol"),
)

# One control action (``action``, taken ``at``), kept forever (append-only).
#
# ``id`` orders the entries: an action's row is inserted after its symbol's state row
# was written, in the same transaction, so a later ``id`` is a later state. The log has
# no other key: ``quantmesh db copy`` copies its ids as they are.
control_audit: Final = Table(
    "control_audit",
    metadata,
    *_control_columns(),
    Column("action", String(CONTROL_LEN), nullable=False),
    Column("at", Double(), nullable=False),
    Index(None, "exchange", "symbol", "id"),
)


# The highest equity (realized plus unrealized PnL) a symbol's risk watch has seen since
# it was last resumed, and the capital the grid committed then: a drawdown is measured
# from it across restarts and take-overs. One row per exchange and symbol.
risk_peaks: Final = Table(
    "risk_peaks",
    metadata,
    _id(),
    _exchange(),
    _symbol(),
    _decimal("peak"),
    _decimal("capital"),
    Column("at", Double(), nullable=False),
    UniqueConstraint("exchange", "symbol"),
)


LOCK_NAME_LEN: Final = 255  # a lock key under its prefix; a utf8mb4 key of 1020 bytes

# A lease of the database lock backend (``quantmesh.lock.sql``) or a fleet entry
# (``quantmesh.coordination.fleet_sql``), one row per name, kept after its release so its
# ``fence`` never goes back. ``token`` names the (last) holder; ``expires_us`` is when
# the lease ends on the database server's clock (microseconds since the epoch; a
# released lock's is 0); ``data`` is a fleet entry's JSON. No ``exchange`` column: the
# name carries it.
lock_leases: Final = Table(
    "lock_leases",
    metadata,
    _id(),
    Column("name", String(LOCK_NAME_LEN), nullable=False),
    Column("token", String(ID_LEN), nullable=True),
    Column("fence", BigInteger(), nullable=False),
    Column("expires_us", BigInteger(), nullable=False),
    Column("data", Text(), nullable=True),
    UniqueConstraint("name"),
)
