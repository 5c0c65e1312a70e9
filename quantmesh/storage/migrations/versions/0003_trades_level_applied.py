"""Fills remember whether their effect on the grid level was stored (``level_applied``).

A former owner's buffered execution replayed under a stale fence stores the order and
its fills but not the level; those fills are stored ``false`` so the new owner finds and
applies them. Fills stored before this revision were written with their levels: ``true``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("level_applied", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.create_index(
            batch_op.f("ix_trades_exchange_symbol_level_applied"),
            ["exchange", "symbol", "level_applied"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trades_exchange_symbol_level_applied"))
        batch_op.drop_column("level_applied")
