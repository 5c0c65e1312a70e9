"""``quantmesh notify-test [-c PATH]``: send one test message to every channel under
``notifications.channels`` and say, one line per channel, whether it arrived.

Exit code 0 when every channel took its message, 1 when any did not (or none is
configured), 2 for bad settings.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from quantmesh.cli.exit_codes import EXIT_FAILURE, EXIT_OK, print_error
from quantmesh.cli.options import add_config_option

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers


def register(subparsers: Subparsers) -> None:
    add_config_option(
        subparsers.add_parser("notify-test", help="send a test message to every channel")
    )


def run(args: argparse.Namespace) -> int:
    from quantmesh.config import load_settings
    from quantmesh.notify.build import send_test

    settings = load_settings(args.config)
    if not settings.notifications.channels:
        print_error(f"{args.config}: no channel under notifications.channels to test")
        return EXIT_FAILURE
    import asyncio  # here: the parser of every command loads this module

    outcomes = asyncio.run(send_test(settings.notifications, settings.instance.id))
    for name, failure in outcomes.items():
        print(f"{name}: arrived" if failure is None else f"{name}: FAILED ({failure})")
    return EXIT_OK if all(failure is None for failure in outcomes.values()) else EXIT_FAILURE
