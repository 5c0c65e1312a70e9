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
from quantmesh.cli.http_client import Refused, add_instance_options, call, instance_of

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers

# Removing a symbol waits for its in-flight calls and cancels (trading.shutdown_grace and
# cancel_timeout) before the instance answers.
TIMEOUT = 120.0


def register(subparsers: Subparsers) -> None:
    add_instance_options(
        subparsers.add_parser("reload", help="make a running instance read its settings again")
    )


def run(args: argparse.Namespace) -> int:
    base, token = instance_of(args)
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
