"""``quantmesh check-config [PATH]``: validate the settings and print them, secrets masked.

The effective settings go to stdout; warnings (valid but risky) to stderr, one line each
starting with ``warning:``, with exit code 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from quantmesh.cli.exit_codes import EXIT_OK
from quantmesh.cli.options import DEFAULT_CONFIG

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers


def register(subparsers: Subparsers) -> None:
    check = subparsers.add_parser(
        "check-config", help="validate settings and print them, secrets masked"
    )
    check.add_argument("path", type=Path, nargs="?", default=DEFAULT_CONFIG)


def run(args: argparse.Namespace) -> int:
    from quantmesh.config import load_settings, render_effective
    from quantmesh.preflight import config_warnings

    settings = load_settings(args.path)
    for warning in config_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    print(render_effective(settings), end="")
    return EXIT_OK
