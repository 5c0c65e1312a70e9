"""Alembic environment: runs on the connection ``quantmesh.storage.migrate`` hands over.

There is no ``alembic.ini`` and no URL here: the caller owns the connection and its
transaction (see ``migrate``), so the same code runs inside the SQLite database thread
and inside ``AsyncConnection.run_sync`` for the servers.
"""

from __future__ import annotations

from alembic import context

from quantmesh.storage.migrate import configure_context


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the QuantMesh migrations through quantmesh.storage.migrate")
    configure_context(context, connection)
    with context.begin_transaction():
        context.run_migrations()


run()
