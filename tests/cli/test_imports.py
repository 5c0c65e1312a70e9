"""What a command loads: ``check-config`` validates and prints without loading the event
loop, the logging library or the database and exchange clients (it never logs, so it
needs no logging set up), and the parser of every command loads none of them either -
each command imports what it runs when it runs. The default daemon loads no client of a
server it does not use, no ORM and no migration tool, and - up to its first order - none of
what only another configuration uses."""

from __future__ import annotations

import importlib.util
import json
import shutil
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


# What the default daemon logging JSON (its output is not a terminal) never uses:
UNUSED_BY_DEFAULT = (
    "rich",  # structlog's console tracebacks (installed with the development tools)
    "pygments",
    "quantmesh.notify.build",  # notification channels: none configured
    "quantmesh.notify.channels",
    "quantmesh.notify.dispatcher",
    "quantmesh.notify.summary",
    "quantmesh.notify.election",
    "quantmesh.coordination.servers",  # a lock server and its failover: none configured
    "quantmesh.lock.failover",
    "quantmesh.exchange.ccxt",  # a live exchange
    "quantmesh.exchange.paper",
    "quantmesh.research",  # backtests and downloads: other commands
    "quantmesh.cli.backtest",  # the other commands' modules: their parsers too
    "quantmesh.cli.ctl",
    "quantmesh.cli.export",
    "quantmesh.cli.sim_exchange",
    "quantmesh.cli.status",
    "difflib",  # the "did you mean" of a bad settings file
    "getpass",  # ctl's actor name
)

# Runs ``quantmesh run`` in-process with its log output watched: at the first order placed
# it prints which of the modules were loaded, and ends the process there.
_FIRST_ORDER = f"""
import io, json, os, sys
from quantmesh.cli.main import main

class Watch(io.TextIOBase):
    def __init__(self, out):
        self.out = out
    def isatty(self):
        return False
    def write(self, text):
        if '"event": "order_placed"' in text:
            loaded = [m for m in {UNUSED_BY_DEFAULT!r} if m in sys.modules]
            os.write(1, (json.dumps(loaded) + "\\n").encode())
            os._exit(0)
        return len(text)

sys.stderr = sys.stdout = Watch(sys.stdout)
main(["run", "-c", sys.argv[1]])
os.write(1, b"no order\\n")
"""


@pytest.mark.timeout(60)
def test_the_default_daemon_loads_nothing_another_configuration_needs(tmp_path: Path) -> None:
    """The default configuration run to its first order, as ``bench.bench_start`` runs it
    (its output not a terminal, so it logs JSON), but on a free HTTP port."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    config = tmp_path / "config" / "config.yaml"
    config.write_text(config.read_text().replace("port: 9321", "port: 0"))
    answer = subprocess.run(
        [sys.executable, "-c", _FIRST_ORDER, str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert answer.stdout.splitlines()[-1:] == ["[]"], answer.stdout + answer.stderr


_STRUCTLOG = """
import json, sys
from quantmesh.observability.logging import import_structlog
import_structlog(console=sys.argv[1] == "console")
loaded = "rich" in sys.modules
import rich  # still importable afterwards
print(json.dumps([loaded, sys.modules["structlog.dev"].rich is not None]))
"""


@pytest.mark.skipif(importlib.util.find_spec("rich") is None, reason="needs rich installed")
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("fmt", "with_rich"), [("json", False), ("console", True)])
def test_structlog_goes_without_rich_only_for_json(fmt: str, with_rich: bool) -> None:
    """Logging JSON, structlog is imported as if rich were not installed (it would render
    console tracebacks only); rich itself stays importable. Logging to a console, structlog
    gets rich as it would anyway."""
    assert json.loads(python(_STRUCTLOG, fmt)) == [with_rich, with_rich]
