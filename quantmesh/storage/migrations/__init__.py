"""Alembic migrations of the QuantMesh schema, shipped inside the package.

``quantmesh.storage.migrate`` runs them without an ``alembic.ini``; ``env.py`` takes the
connection from ``config.attributes["connection"]``.
"""
