"""The database schema: portable SQLAlchemy 2 declarative models.

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
from typing import Any, Final, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
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
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
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


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class OrderRow(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("exchange", "client_order_id"),
        Index(None, "exchange", "symbol", "status"),
    )

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    exchange: Mapped[str] = mapped_column(String(EXCHANGE_LEN))
    client_order_id: Mapped[str] = mapped_column(String(ID_LEN))
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN))
    side: Mapped[str] = mapped_column(String(SIDE_LEN))
    price: Mapped[Decimal] = mapped_column(ExactDecimal())
    amount: Mapped[Decimal] = mapped_column(ExactDecimal())
    filled: Mapped[Decimal] = mapped_column(ExactDecimal())
    status: Mapped[str] = mapped_column(String(STATUS_LEN))
    exchange_order_id: Mapped[str] = mapped_column(String(ID_LEN))
    created_at: Mapped[float] = mapped_column(Double())
    updated_at: Mapped[float] = mapped_column(Double())
    # Fence of the level lock the order was placed under (issue 3); NULL when none.
    lock_fence: Mapped[int | None] = mapped_column(BigInteger(), nullable=True)


class TradeRow(Base):
    """One fill (the seed's "trade").

    ``level_applied`` says whether the fill's effect on its grid level was stored with it
    (a grid write under an accepted fence). A fill stored without its level (a former
    owner's buffered write replayed under a stale fence keeps the fill, not the level) is
    ``False`` until the symbol's owner applies it; the index finds those cheaply.
    """

    __tablename__ = "trades"
    __table_args__ = (
        UniqueConstraint("exchange", "symbol", "trade_id"),
        Index(None, "exchange", "symbol", "ts"),
        Index(None, "exchange", "symbol", "level_applied"),
    )

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    exchange: Mapped[str] = mapped_column(String(EXCHANGE_LEN))
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN))
    trade_id: Mapped[str] = mapped_column(String(ID_LEN))
    side: Mapped[str] = mapped_column(String(SIDE_LEN))
    price: Mapped[Decimal] = mapped_column(ExactDecimal())
    amount: Mapped[Decimal] = mapped_column(ExactDecimal())
    fee: Mapped[Decimal] = mapped_column(ExactDecimal())
    fee_currency: Mapped[str] = mapped_column(String(CURRENCY_LEN))
    client_order_id: Mapped[str] = mapped_column(String(ID_LEN))
    exchange_order_id: Mapped[str] = mapped_column(String(ID_LEN))
    ts: Mapped[float] = mapped_column(Double())
    # rows stored before migration 0003 were all written with their levels
    level_applied: Mapped[bool] = mapped_column(Boolean(), server_default=true())


class RoundTripRow(Base):
    __tablename__ = "round_trips"
    __table_args__ = (UniqueConstraint("exchange", "symbol", "level", "cycle"),)

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    exchange: Mapped[str] = mapped_column(String(EXCHANGE_LEN))
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN))
    level: Mapped[int] = mapped_column(Integer())
    cycle: Mapped[int] = mapped_column(BigInteger())
    amount: Mapped[Decimal] = mapped_column(ExactDecimal())
    buy_cost: Mapped[Decimal] = mapped_column(ExactDecimal())
    sell_proceeds: Mapped[Decimal] = mapped_column(ExactDecimal())
    pnl: Mapped[Decimal] = mapped_column(ExactDecimal())
    closed_at: Mapped[float] = mapped_column(Double())


class GridRow(Base):
    __tablename__ = "grids"
    __table_args__ = (UniqueConstraint("exchange", "symbol"),)

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    exchange: Mapped[str] = mapped_column(String(EXCHANGE_LEN))
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN))
    anchor: Mapped[Decimal] = mapped_column(ExactDecimal())
    spacing: Mapped[str | None] = mapped_column(String(16), nullable=True)
    interval: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    fence: Mapped[int] = mapped_column(BigInteger())
    last_price: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    last_price_at: Mapped[float | None] = mapped_column(Double(), nullable=True)
    updated_at: Mapped[float] = mapped_column(Double())


class GridLevelRow(Base):
    __tablename__ = "grid_levels"
    __table_args__ = (
        UniqueConstraint("exchange", "symbol", "level_index"),
        ForeignKeyConstraint(
            ["exchange", "symbol"], ["grids.exchange", "grids.symbol"], ondelete="CASCADE"
        ),
    )

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    exchange: Mapped[str] = mapped_column(String(EXCHANGE_LEN))
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN))
    level_index: Mapped[int] = mapped_column(Integer())
    holding: Mapped[Decimal] = mapped_column(ExactDecimal())
    cost: Mapped[Decimal] = mapped_column(ExactDecimal())
    cycle: Mapped[int] = mapped_column(BigInteger())


metadata: Final = Base.metadata
orders: Final = cast(Table, OrderRow.__table__)
trades: Final = cast(Table, TradeRow.__table__)
round_trips: Final = cast(Table, RoundTripRow.__table__)
grids: Final = cast(Table, GridRow.__table__)
grid_levels: Final = cast(Table, GridLevelRow.__table__)


# What people ask of a symbol (``quantmesh.control``): its desired state and the audit.
CONTROL_LEN: Final = 16  # a control mode or action: "stop_buys", "cancel-all"
ACTOR_LEN: Final = 128
INSTANCE_LEN: Final = 64  # instance.id: 1 to 64 characters
REASON_LEN: Final = 1000  # wider than the HTTP layer lets in: nothing is cut short here
# a table's own columns go after those of _ControlColumns (SQLAlchemy puts them first)
_AFTER_SHARED: Final = 1


class _ControlColumns:
    """What both control tables hold: whose symbol, what was asked, by whom, on which
    instance (the fields of a ``Desired`` but its time, which each names its own way)."""

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    exchange: Mapped[str] = mapped_column(String(EXCHANGE_LEN))
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN))
    mode: Mapped[str] = mapped_column(String(CONTROL_LEN))
    cancel_orders: Mapped[bool] = mapped_column(Boolean())
    reason: Mapped[str] = mapped_column(String(REASON_LEN))
    actor: Mapped[str] = mapped_column(String(ACTOR_LEN))
    instance: Mapped[str] = mapped_column(String(INSTANCE_LEN))


class SymbolControlRow(_ControlColumns, Base):
    """The desired state a person set for a symbol (one row per exchange and symbol; a
    symbol without a row is active), set at ``set_at``."""

    __tablename__ = "symbol_controls"
    __table_args__ = (UniqueConstraint("exchange", "symbol"),)

    set_at: Mapped[float] = mapped_column(Double(), sort_order=_AFTER_SHARED)


class ControlAuditRow(_ControlColumns, Base):
    """One control action (``action``, taken ``at``), kept forever (append-only).

    ``id`` orders the entries: an action's row is inserted after its symbol's state row
    was written, in the same transaction, so a later ``id`` is a later state. The log
    has no other key: ``quantmesh db copy`` copies its ids as they are.
    """

    __tablename__ = "control_audit"
    __table_args__ = (Index(None, "exchange", "symbol", "id"),)

    action: Mapped[str] = mapped_column(String(CONTROL_LEN), sort_order=_AFTER_SHARED)
    at: Mapped[float] = mapped_column(Double(), sort_order=_AFTER_SHARED)


symbol_controls: Final = cast(Table, SymbolControlRow.__table__)
control_audit: Final = cast(Table, ControlAuditRow.__table__)


class RiskPeakRow(Base):
    """The highest equity (realized plus unrealized PnL) a symbol's risk watch has seen
    since it was last resumed, and the capital the grid committed then: a drawdown is
    measured from it across restarts and take-overs. One row per exchange and symbol."""

    __tablename__ = "risk_peaks"
    __table_args__ = (UniqueConstraint("exchange", "symbol"),)

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    exchange: Mapped[str] = mapped_column(String(EXCHANGE_LEN))
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN))
    peak: Mapped[Decimal] = mapped_column(ExactDecimal())
    capital: Mapped[Decimal] = mapped_column(ExactDecimal())
    at: Mapped[float] = mapped_column(Double())


risk_peaks: Final = cast(Table, RiskPeakRow.__table__)


LOCK_NAME_LEN: Final = 255  # a lock key under its prefix; a utf8mb4 key of 1020 bytes


class LockLeaseRow(Base):
    """A lease of the database lock backend (``quantmesh.lock.sql``) or a fleet entry
    (``quantmesh.coordination.fleet_sql``), one row per name, kept after its release so
    its ``fence`` never goes back. ``token`` names the (last) holder; ``expires_us`` is
    when the lease ends on the database server's clock (microseconds since the epoch; a
    released lock's is 0); ``data`` is a fleet entry's JSON. No ``exchange`` column: the
    name carries it."""

    __tablename__ = "lock_leases"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(LOCK_NAME_LEN))
    token: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    fence: Mapped[int] = mapped_column(BigInteger())
    expires_us: Mapped[int] = mapped_column(BigInteger())
    data: Mapped[str | None] = mapped_column(Text(), nullable=True)


lock_leases: Final = cast(Table, LockLeaseRow.__table__)
