"""What people ask of a symbol: its desired state and the audit of control actions.

The desired state is ``symbol_controls``; the audit is ``control_audit``, append-only,
ordered by ``id``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

# a 64-bit surrogate key; SQLite only auto-increments an "INTEGER PRIMARY KEY"
SURROGATE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _shared_columns() -> list[sa.Column[Any]]:
    """The columns both tables begin with (new ones for each table)."""
    return [
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("exchange", sa.String(length=32), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("cancel_orders", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("instance", sa.String(length=64), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "symbol_controls",
        *_shared_columns(),
        sa.Column("set_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_symbol_controls")),
        sa.UniqueConstraint("exchange", "symbol", name=op.f("uq_symbol_controls_exchange_symbol")),
    )
    op.create_table(
        "control_audit",
        *_shared_columns(),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_audit")),
    )
    with op.batch_alter_table("control_audit", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_control_audit_exchange_symbol_id"),
            ["exchange", "symbol", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("control_audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_control_audit_exchange_symbol_id"))

    op.drop_table("control_audit")
    op.drop_table("symbol_controls")
