"""Initial schema: orders, trades, round trips, grids and their levels.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 06:35:53.216584
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from quantmesh.storage.models import ExactDecimal

# a 64-bit surrogate key; SQLite only auto-increments an "INTEGER PRIMARY KEY"
SURROGATE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "grids",
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("exchange", sa.String(length=32), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("anchor", ExactDecimal(), nullable=False),
        sa.Column("spacing", sa.String(length=16), nullable=True),
        sa.Column("interval", ExactDecimal(), nullable=True),
        sa.Column("fence", sa.BigInteger(), nullable=False),
        sa.Column("last_price", ExactDecimal(), nullable=True),
        sa.Column("last_price_at", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grids")),
        sa.UniqueConstraint("exchange", "symbol", name=op.f("uq_grids_exchange_symbol")),
    )
    op.create_table(
        "orders",
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("exchange", sa.String(length=32), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("price", ExactDecimal(), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("filled", ExactDecimal(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("exchange_order_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint(
            "exchange", "client_order_id", name=op.f("uq_orders_exchange_client_order_id")
        ),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_orders_exchange_symbol_status"),
            ["exchange", "symbol", "status"],
            unique=False,
        )

    op.create_table(
        "round_trips",
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("exchange", sa.String(length=32), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("cycle", sa.BigInteger(), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("buy_cost", ExactDecimal(), nullable=False),
        sa.Column("sell_proceeds", ExactDecimal(), nullable=False),
        sa.Column("pnl", ExactDecimal(), nullable=False),
        sa.Column("closed_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_round_trips")),
        sa.UniqueConstraint(
            "exchange",
            "symbol",
            "level",
            "cycle",
            name=op.f("uq_round_trips_exchange_symbol_level_cycle"),
        ),
    )
    op.create_table(
        "trades",
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("exchange", sa.String(length=32), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("trade_id", sa.String(length=64), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("price", ExactDecimal(), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("fee", ExactDecimal(), nullable=False),
        sa.Column("fee_currency", sa.String(length=16), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("exchange_order_id", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trades")),
        sa.UniqueConstraint(
            "exchange", "symbol", "trade_id", name=op.f("uq_trades_exchange_symbol_trade_id")
        ),
    )
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_trades_exchange_symbol_ts"), ["exchange", "symbol", "ts"], unique=False
        )

    op.create_table(
        "grid_levels",
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("exchange", sa.String(length=32), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("level_index", sa.Integer(), nullable=False),
        sa.Column("holding", ExactDecimal(), nullable=False),
        sa.Column("cost", ExactDecimal(), nullable=False),
        sa.Column("cycle", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["exchange", "symbol"],
            ["grids.exchange", "grids.symbol"],
            name=op.f("fk_grid_levels_exchange_symbol_grids"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grid_levels")),
        sa.UniqueConstraint(
            "exchange",
            "symbol",
            "level_index",
            name=op.f("uq_grid_levels_exchange_symbol_level_index"),
        ),
    )


def downgrade() -> None:
    op.drop_table("grid_levels")
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trades_exchange_symbol_ts"))

    op.drop_table("trades")
    op.drop_table("round_trips")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_exchange_symbol_status"))

    op.drop_table("orders")
    op.drop_table("grids")
