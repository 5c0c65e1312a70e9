"""``quantmesh db ...``: schema migration and copying a database to another.

- ``quantmesh db upgrade -c config.yaml`` migrates the configured database to this
  version's schema (what ``database.auto_migrate`` does on start).
- ``quantmesh db copy --from URL --to URL`` copies every table in batches, safe to re-run,
  and verifies the row counts (``quantmesh.storage.copy``).

Errors are ``QuantMeshError``s; ``quantmesh.cli.main`` turns them into exit codes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from quantmesh.cli.exit_codes import EXIT_OK
from quantmesh.cli.options import add_config_option

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers


def register(subparsers: Subparsers) -> None:
    """``db`` and its actions."""
    db = subparsers.add_parser("db", help="database schema migration and copy")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")

    upgrade = actions.add_parser("upgrade", help="migrate the configured database's schema")
    add_config_option(upgrade)
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")

    copy = actions.add_parser(
        "copy", help="copy every table to another database (re-runnable, verifies counts)"
    )
    copy.add_argument("--from", dest="source", required=True, help="source URL, DSN or path")
    copy.add_argument("--to", dest="target", required=True, help="target URL, DSN or path")
    copy.add_argument("--batch-size", type=int, default=1000, help="rows per batch")
    copy.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def run(args: argparse.Namespace) -> int:
    if args.db_command == "upgrade":
        return _upgrade(args.config, args.revision)
    return _copy(args.source, args.target, args.batch_size, not args.no_progress)


def _upgrade(path: Path, revision: str) -> int:
    from quantmesh.config import load_settings

    settings = load_settings(path)
    from quantmesh.storage import migrate
    from quantmesh.storage.runner import runner_for
    from quantmesh.wiring import build_engine

    async def upgrade() -> tuple[str | None, str | None]:
        runner = runner_for(build_engine(settings))
        try:
            before = await runner.run(
                "upgrade", lambda conn: migrate.upgrade(conn, revision), write=True
            )
            after = await runner.run("upgrade", migrate.current_revision, write=False)
        finally:
            await runner.close()
        return before, after

    import asyncio  # here: the parser of every command loads this module

    before, after = asyncio.run(upgrade())
    if before == after:
        print(f"database schema already at revision {after}")
    else:
        print(f"database schema upgraded from revision {before or 'none'} to {after}")
    return EXIT_OK


def _copy(source: str, target: str, batch_size: int, progress: bool) -> int:
    import asyncio

    from quantmesh.storage.copy import StderrProgress, copy_database

    report = asyncio.run(
        copy_database(
            source,
            target,
            batch_size=batch_size,
            progress=StderrProgress(sys.stderr) if progress else None,
        )
    )
    for table, count in report.counts.items():
        print(f"{table}: {count} rows")
    print(f"copied {report.total} rows in {report.seconds:.1f} s; row counts verified")
    return EXIT_OK
