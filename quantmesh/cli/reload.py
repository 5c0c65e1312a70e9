"""``quantmesh reload [-c PATH] [--url URL]``: a running instance reads its settings again.

Asks the instance the settings file names (``http.host``, ``http.port``, ``http.token``;
``--url`` names another) to reload (``POST /api/reload``); the instance reads its own
file - the one it was started with. Prints the changes, one line each (exit 0), or the
problems of an invalid file, one line each on stderr (exit 2: nothing changed).
``systemctl reload`` and SIGHUP do the same without HTTP.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from quantmesh.cli.exit_codes import EXIT_OK, print_error
from quantmesh.cli.http_client import Refused, call, instance_url
from quantmesh.cli.options import add_config_option

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers

# Removing a symbol waits for its in-flight calls and cancels (trading.shutdown_grace and
# cancel_timeout) before the instance answers.
TIMEOUT = 120.0


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("reload", help="make a running instance read its settings again")
    add_config_option(parser)
    parser.add_argument("--url", help="the instance's HTTP address (default: from the settings)")


def run(args: argparse.Namespace) -> int:
    from quantmesh.config import load_settings

    settings = load_settings(args.config)
    base = args.url.rstrip("/") if args.url else instance_url(settings)
    token = settings.http.token.get_secret_value()
    try:
        answer = call("POST", f"{base}/api/reload", token, {}, timeout=TIMEOUT)
    except Refused as exc:
        problems = exc.body.get("problems") if isinstance(exc.body, dict) else None
        if not problems:
            print_error(exc.message)
            return exc.code
        print("quantmesh: the instance refused the settings, nothing changed:", file=sys.stderr)
        for problem in problems:
            print(problem, file=sys.stderr)
        return exc.code
    changes = answer.get("changes") or []
    for line in changes:
        print(line)
    if not changes:
        print("no changes")
    return EXIT_OK
