"""Storage: where orders, fills, round trips, grid state and symbol controls are kept.

- ``base``: the ``Repository`` protocol and the values it reads and writes.
- ``repository``: ``SqlRepository``, the protocol over SQLAlchemy Core, with ``rows``
  (rows to domain objects), ``statements`` (its SQL) and ``models`` (the schema).
- ``controls``: ``SqlControlStore``, the control board's store of what people ask of a
  symbol (desired state and audit), normally on the repository's runner.
- ``runner``: runs one transaction from asyncio (a thread for SQLite, async servers);
  ``engine`` builds the engine per dialect, ``dsn`` reads the seed's DSNs, ``db_errors``
  classifies driver errors.
- ``buffer``: ``BufferedRepository``, which keeps writes through an outage; ``pending``
  (the buffered writes), ``journal`` (their files), ``records`` (their JSON form) and
  ``replay`` (moving them back into the database).
- ``migrate`` and ``migrations/``: the Alembic schema migrations; ``copy``: ``quantmesh db
  copy``, one database into another.
"""
