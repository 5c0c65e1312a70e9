"""``quantmesh``: the parser of every subcommand, and errors turned into exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from quantmesh import __version__
from quantmesh.cli import (
    backtest,
    check_config,
    ctl,
    data,
    db,
    export,
    notify_test,
    reload,
    run,
    sim_exchange,
    status,
)
from quantmesh.cli.exit_codes import EXIT_CONFIG, EXIT_FAILURE, print_error
from quantmesh.errors import ConfigError, QuantMeshError

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers


class Command(Protocol):
    """A subcommand module."""

    def register(self, subparsers: Subparsers) -> None:
        """Add the subcommand's parser to ``subparsers``."""
        ...

    def run(self, args: argparse.Namespace) -> int:
        """Run the subcommand; returns its exit code."""
        ...


# By name, in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {
    "run": run,
    "check-config": check_config,
    "status": status,
    "export": export,
    "ctl": ctl,
    "reload": reload,
    "sim-exchange": sim_exchange,
    "data": data,
    "backtest": backtest,
    "db": db,
    "notify-test": notify_test,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantmesh", description="Grid-trading daemon.")
    parser.add_argument("--version", action="version", version=f"quantmesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command not in ("run", "check-config"):
        # Only the daemon logs; the other commands print their result and nothing else.
        # (check-config loads no module that logs, so it need not load structlog either.)
        from quantmesh.observability.logging import configure_logging

        configure_logging("error", "console")
    try:
        return COMMANDS[args.command].run(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except QuantMeshError as exc:
        print_error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
