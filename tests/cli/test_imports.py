"""What a command loads: ``check-config`` validates and prints without loading the event
loop, the logging library or the database and exchange clients (it never logs, so it
needs no logging set up), and the parser of every command loads none of them either -
each command imports what it runs when it runs. The default daemon loads no client of a
server it does not use, no ORM and no migration tool."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("asyncio", "structlog", "sqlalchemy", "aiohttp", "ccxt", "redis", "quantmesh.grid.planner")
# what the default daemon (SQLite, no lock server, the simulated exchange) never needs
SERVER_ONLY = (
    "sqlalchemy.orm",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.mysql",
    "asyncpg",
    "aiomysql",
    "redis",
    "alembic",
    "ccxt",
)

_LOADED = f"""
import contextlib, io, json, sys
from quantmesh.cli.main import main
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
print(json.dumps({{"code": code, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def python(script: str, *argv: str) -> str:
    """The last line ``script`` prints, run in a fresh interpreter from the checkout."""
    answer = subprocess.run(
        [sys.executable, "-c", script, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return answer.stdout.splitlines()[-1]  # after any log line a module printed


def loaded(*argv: str) -> tuple[object, list[str]]:
    """The exit code of ``quantmesh argv`` run in a fresh interpreter, and which of the
    heavy modules it had loaded by the end."""
    result = json.loads(python(_LOADED, *argv))
    return result["code"], result["loaded"]


@pytest.mark.timeout(60)
def test_check_config_loads_no_event_loop_logging_or_clients() -> None:
    code, heavy = loaded("check-config", "config/config.yaml")
    assert code == 0
    assert heavy == []


@pytest.mark.timeout(60)
def test_the_parser_of_every_command_loads_none_of_them() -> None:
    code, heavy = loaded("--help")
    assert code == 0
    assert heavy == []


_DAEMON = f"""
import json, sys
from quantmesh.config import load_settings
from quantmesh.wiring import build_sql_repository
build_sql_repository(load_settings("config/config.yaml"), "simulated")
heavy = {SERVER_ONLY!r}
print(json.dumps([m for m in heavy if m in sys.modules]))
"""


@pytest.mark.timeout(60)
def test_the_default_daemon_loads_no_server_client_orm_or_migration_tool() -> None:
    """The default configuration (SQLite, no lock server, the simulated exchange): none of
    what only a server database, a lock server, a live exchange or a migration needs."""
    assert json.loads(python(_DAEMON)) == []
