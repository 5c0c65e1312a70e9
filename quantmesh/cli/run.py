"""``quantmesh run -c PATH``: run the daemon until a signal stops it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING

from quantmesh import failpoints
from quantmesh.cli.exit_codes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, print_error
from quantmesh.cli.options import add_config_option

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers


def register(subparsers: Subparsers) -> None:
    add_config_option(subparsers.add_parser("run", help="run the daemon"))


class _StoppedBeforeStart(Exception):
    """SIGTERM arrived before the service installed its own signal handling."""


def _stop_before_start(signum: int, frame: object) -> None:
    raise _StoppedBeforeStart


def run(args: argparse.Namespace) -> int:
    # Until the service handles signals itself, SIGTERM (systemctl stop, docker stop)
    # stops the start-up cleanly instead of killing the process: nothing is placed yet.
    signal.signal(signal.SIGTERM, _stop_before_start)
    # SIGHUP (systemctl reload) would end the process until the service handles it: the
    # settings are being read now anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        failpoints.arm(os.environ.get("QUANTMESH_FAILPOINTS", ""))
    except ValueError as exc:
        print_error(f"QUANTMESH_FAILPOINTS: {exc}; unset it (it is for crash tests)")
        return EXIT_CONFIG
    if failpoints.armed():
        print(f"quantmesh: crash points armed: {', '.join(failpoints.armed())}", file=sys.stderr)
    try:
        from quantmesh.config import load_settings

        settings = load_settings(args.config)  # before the heavy imports: a bad file fails fast
        import asyncio  # here: the parser of every command loads this module

        from quantmesh.observability.logging import import_structlog, renders_console

        # before the daemon's modules import structlog: logging JSON, it goes without rich
        import_structlog(renders_console(settings.logging.format, sys.stderr))
        from quantmesh.wiring import run_daemon

        result = asyncio.run(run_daemon(settings, config_path=args.config))
    except _StoppedBeforeStart:
        print("quantmesh: stopped while starting, before any order", file=sys.stderr)
        return EXIT_OK
    if result.fatal is not None:
        print_error(result.fatal)
        return EXIT_FAILURE
    if not result.ok:
        print_error(f"every symbol failed: {'; '.join(result.failed.values())}")
        return EXIT_FAILURE
    return EXIT_OK
