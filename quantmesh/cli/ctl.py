"""``quantmesh ctl``: steer a running instance through its HTTP API.

``ctl pause|stop-buys|resume|cancel-all|liquidate SYMBOL [--reason TEXT] [--by NAME]``
records what a person asks of a symbol; ``ctl status`` lists every symbol's desired state and the
recent actions. The instance is the one the settings file names (``http.host``,
``http.port``, ``http.token``), or ``--url``. Any instance of a fleet will do: the desired
state is stored in the shared database and the owner acts on it.
"""

from __future__ import annotations

import argparse
import socket
import urllib.parse
from typing import TYPE_CHECKING, Any

from quantmesh.cli.exit_codes import EXIT_OK, print_error
from quantmesh.cli.http_client import Refused, add_instance_options, call, instance_of

if TYPE_CHECKING:
    from quantmesh.cli.options import Subparsers

ACTIONS = ("pause", "stop-buys", "resume", "cancel-all", "liquidate")
RECENT = 10


def register(subparsers: Subparsers) -> None:
    ctl = subparsers.add_parser(
        "ctl", help="pause, stop buys, cancel, liquidate or resume a symbol"
    )
    actions = ctl.add_subparsers(dest="ctl_command", required=True, metavar="ACTION")
    for action in ACTIONS:
        parser = actions.add_parser(action, help=f"{action} SYMBOL (e.g. ETH/USDT)")
        parser.add_argument("symbol", help="the symbol, e.g. ETH/USDT")
        parser.add_argument("--reason", default="", help="why (kept in the audit)")
        parser.add_argument("--by", default="", help="who asks (default: user@host)")
        add_instance_options(parser)
    add_instance_options(
        actions.add_parser("status", help="every symbol's desired state and recent actions")
    )


def run(args: argparse.Namespace) -> int:
    base, token = instance_of(args)
    try:
        if args.ctl_command == "status":
            print(format_controls(call("GET", f"{base}/api/controls", token)), end="")
            return EXIT_OK
        path = "/".join(urllib.parse.quote(part, safe="") for part in args.symbol.split("/"))
        body = {"reason": args.reason, "by": args.by or _whoami()}
        answer = call("POST", f"{base}/api/symbols/{path}/{args.ctl_command}", token, body)
    except Refused as exc:
        print_error(exc.message)
        return exc.code
    print(format_answer(answer))
    return EXIT_OK


def _whoami() -> str:
    import getpass  # here: the parser of every command loads this module

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def format_answer(answer: dict[str, Any]) -> str:
    """One line: the symbol, its state now, who asked and when it takes effect."""
    control = answer["control"]
    state = control["mode"] + (" (every order cancelled)" if control["cancel_orders"] else "")
    why = f", reason {control['reason']!r}" if control["reason"] else ""
    return (
        f"{answer['symbol']}: {state}, by {control['by']}{why}; takes effect "
        f"{answer['takes_effect']}"
    )


def format_controls(body: dict[str, Any]) -> str:
    """The desired state of every symbol as a table, then the recent actions."""
    rows = [["SYMBOL", "MODE", "BY", "REASON"]]
    for symbol, control in sorted(body["symbols"].items()):
        mode = control["mode"] + ("+cancel" if control.get("cancel_orders") else "")
        rows.append([symbol, mode, str(control.get("by", "")), str(control.get("reason", ""))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    audit = body.get("audit")
    if isinstance(audit, list) and audit:
        lines.append("recent actions:")
        lines += [
            f"  {entry['symbol']} {entry['action']} by {entry['by']} on {entry['instance']}"
            + (f": {entry['reason']}" if entry["reason"] else "")
            for entry in audit[:RECENT]
        ]
    elif isinstance(audit, dict):
        lines.append(f"recent actions: {audit['error']}")
    return "\n".join(lines) + "\n"
