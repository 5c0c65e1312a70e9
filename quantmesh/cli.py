"""Command line: the only place that turns errors into exit codes.

Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from quantmesh import __version__
from quantmesh.errors import ConfigError, QuantMeshError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
DEFAULT_CONFIG = Path("config/config.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantmesh", description="Grid-trading daemon.")
    parser.add_argument("--version", action="version", version=f"quantmesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help="YAML settings")

    check = sub.add_parser("check-config", help="validate settings and print them, secrets masked")
    check.add_argument("path", type=Path, nargs="?", default=DEFAULT_CONFIG)

    status = sub.add_parser("status", help="per-symbol state from the database")
    status.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help="YAML settings")

    from quantmesh.cli_sim import add_arguments as add_sim_arguments

    add_sim_arguments(sub.add_parser("sim-exchange", help="run the exchange simulator (testing)"))

    from quantmesh.cli_db import add_parser as add_db_parser

    add_db_parser(sub, DEFAULT_CONFIG)
    return parser


def _print_error(message: str) -> None:
    print(f"quantmesh: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "run":
        # Only the daemon logs; the other commands print their result and nothing else.
        from quantmesh.observability.logging import configure_logging

        configure_logging("error", "console")
    try:
        if args.command == "check-config":
            return _check_config(args.path)
        if args.command == "status":
            return _status(args.config)
        if args.command == "sim-exchange":
            from quantmesh.cli_sim import run as run_sim

            return run_sim(args)
        if args.command == "db":
            from quantmesh.cli_db import run as run_db

            return run_db(args)
        return _run(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except QuantMeshError as exc:
        _print_error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _check_config(path: Path) -> int:
    """The effective settings on stdout; warnings (valid but risky) on stderr, one line
    each starting with ``warning:``, with exit code 0."""
    from quantmesh.config import config_warnings, load_settings, render_effective

    settings = load_settings(path)
    for warning in config_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    print(render_effective(settings), end="")
    return EXIT_OK


class _StoppedBeforeStart(Exception):
    """SIGTERM arrived before the service installed its own signal handling."""


def _stop_before_start(signum: int, frame: object) -> None:
    raise _StoppedBeforeStart


def _run(path: Path) -> int:
    # Until the service handles signals itself, SIGTERM (systemctl stop, docker stop)
    # stops the start-up cleanly instead of killing the process: nothing is placed yet.
    signal.signal(signal.SIGTERM, _stop_before_start)
    try:
        from quantmesh.config import load_settings

        settings = load_settings(path)  # before the heavy imports: a bad file fails fast
        from quantmesh.wiring import run_daemon

        result = asyncio.run(run_daemon(settings))
    except _StoppedBeforeStart:
        print("quantmesh: stopped while starting, before any order", file=sys.stderr)
        return EXIT_OK
    if result.fatal is not None:
        _print_error(result.fatal)
        return EXIT_FAILURE
    if not result.ok:
        _print_error(f"every symbol failed: {'; '.join(result.failed.values())}")
        return EXIT_FAILURE
    return EXIT_OK


def _status(path: Path) -> int:
    from quantmesh.config import load_settings

    settings = load_settings(path)
    from quantmesh.wiring import check_database_exists, read_status

    check_database_exists(settings)
    rows, notes = asyncio.run(read_status(settings))
    print(format_status(rows), end="")
    if len(rows) > 1:
        for note in notes:
            print(note)
    return EXIT_OK


def format_status(rows: Sequence[Sequence[str]]) -> str:
    """A plain text table; the first row is the header."""
    if len(rows) <= 1:
        return "no grid recorded yet: run `quantmesh run` first\n"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
