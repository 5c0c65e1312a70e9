"""The exit codes of every command, and the line a runtime failure prints.

0 ok, 1 runtime failure, 2 bad configuration or usage (argparse exits 2 on a usage error
too).
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def print_error(message: str) -> None:
    """``quantmesh: error: <message>`` on stderr."""
    print(f"quantmesh: error: {message}", file=sys.stderr)
