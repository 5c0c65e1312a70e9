"""The equity peak of each symbol's risk watch, so a drawdown survives a restart.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 14:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from quantmesh.storage.models import ExactDecimal

# a 64-bit surrogate key; SQLite only auto-increments an "INTEGER PRIMARY KEY"
SURROGATE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "risk_peaks",
        sa.Column("id", SURROGATE_ID, autoincrement=True, nullable=False),
        sa.Column("exchange", sa.String(length=32), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("peak", ExactDecimal(), nullable=False),
        sa.Column("capital", ExactDecimal(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_peaks")),
        sa.UniqueConstraint("exchange", "symbol", name=op.f("uq_risk_peaks_exchange_symbol")),
    )


def downgrade() -> None:
    op.drop_table("risk_peaks")
