"""``quantmesh``: the parser of every subcommand, and errors turned into exit codes."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, cast

from quantmesh import __version__
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


# The module of each subcommand, by name, in the order ``--help`` lists them.
COMMANDS: dict[str, str] = {
    "run": "quantmesh.cli.run",
    "check-config": "quantmesh.cli.check_config",
    "status": "quantmesh.cli.status",
    "export": "quantmesh.cli.export",
    "ctl": "quantmesh.cli.ctl",
    "reload": "quantmesh.cli.reload",
    "sim-exchange": "quantmesh.cli.sim_exchange",
    "data": "quantmesh.cli.data",
    "backtest": "quantmesh.cli.backtest",
    "db": "quantmesh.cli.db",
    "notify-test": "quantmesh.cli.notify_test",
}


def command(name: str) -> Command:
    """The subcommand ``name`` (its module, imported now)."""
    return cast("Command", importlib.import_module(COMMANDS[name]))


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Every subcommand's parser; only the named one's when the line starts with a command
    (``quantmesh run ...`` loads no other command's module)."""
    parser = argparse.ArgumentParser(prog="quantmesh", description="Grid-trading daemon.")
    parser.add_argument("--version", action="version", version=f"quantmesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = argv[0] if argv and argv[0] in COMMANDS else None
    for name in COMMANDS if named is None else [named]:
        command(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    if args.command not in ("run", "check-config"):
        # Only the daemon logs; the other commands print their result and nothing else.
        # (check-config loads no module that logs, so it need not load structlog either.)
        from quantmesh.observability.logging import configure_logging

        configure_logging("error", "console")
    try:
        return command(args.command).run(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except QuantMeshError as exc:
        print_error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
