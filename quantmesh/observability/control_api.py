"""The control endpoints: what people ask of a symbol, over HTTP.

- ``POST /api/symbols/{symbol}/{action}``: ``pause``, ``stop-buys``, ``resume``,
  ``cancel-all`` or ``liquidate`` (JSON body, optional: ``reason``, ``by``). Any instance of the fleet
  takes it: the desired state is stored in the database with who, when and why; the owner
  acts on it at once when it is this instance, else at its next read of the board.
  ``{symbol}`` is ``ETH/USDT`` as two path segments, or ``ETH-USDT``, ``ETH_USDT``.
- ``GET /api/controls``: every known symbol's desired state and the newest audit entries.

Both sit behind the HTTP server's middleware: a POST needs ``http.token`` (403 without
one configured), a GET of ``/api/`` needs it when one is set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

import structlog
from aiohttp import web

from quantmesh.control.board import ControlBoard
from quantmesh.control.desired import Desired, parse_action
from quantmesh.errors import StorageError
from quantmesh.observability.metrics import Metrics

log = structlog.get_logger(__name__)

MAX_REASON = 500
MAX_ACTOR = 100
AUDIT_SHOWN = 50


class ControlApi:
    """The handlers, over a board and the symbols this instance knows of."""

    def __init__(
        self,
        board: ControlBoard,
        *,
        known_symbols: Callable[[], Collection[str]],
        owned: Callable[[], Collection[str]],
    ) -> None:
        self._board = board
        self._known = known_symbols  # configured here, or listed by a live fleet member
        self._owned = owned

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/symbols/{base}/{quote}/{action}", self.act),
            web.post("/api/symbols/{pair}/{action}", self.act),
            web.get("/api/controls", self.controls),
        ]

    async def act(self, request: web.Request) -> web.Response:
        try:
            symbol = self._symbol(request.match_info)
            action = parse_action(request.match_info["action"])
            reason, actor = await _who_and_why(request)
        except ValueError as exc:
            return _error(400, str(exc))
        except LookupError as exc:
            return _error(404, str(exc.args[0]))
        try:
            desired = await self._board.apply(symbol, action, reason=reason, actor=actor)
        except StorageError as exc:
            return _error(503, f"not recorded, nothing changed: {exc}")
        here = symbol in self._owned()
        return web.json_response(
            {
                "symbol": symbol,
                "action": action,
                "control": desired.as_json(),
                "owner_here": here,
                "takes_effect": "now" if here else "when the owner next reads the board",
            }
        )

    async def controls(self, _: web.Request) -> web.Response:
        known = self._board.known()
        symbols = sorted(set(self._known()) | set(known or {}))
        try:
            audit = await self._board.audit(None, AUDIT_SHOWN)
        except StorageError as exc:
            audit_json: Any = {"error": f"the audit could not be read: {exc}"}
        else:
            audit_json = [entry.as_json() for entry in audit]
        return web.json_response(
            {
                "symbols": {
                    symbol: _state(None if known is None else known.get(symbol, Desired()))
                    for symbol in symbols
                },
                "audit": audit_json,
            },
            dumps=lambda value: json.dumps(value, default=str),
        )

    def _symbol(self, match: dict[str, str] | Any) -> str:
        """The configured symbol the path names; ``LookupError`` naming the known ones."""
        if "pair" in match:
            wanted = match["pair"].upper().replace("-", "/").replace("_", "/")
        else:
            wanted = f"{match['base']}/{match['quote']}".upper()
        known = sorted(self._known())
        if wanted not in known:
            raise LookupError(
                f"{wanted} is not a symbol of this fleet; known: {', '.join(known) or 'none'}"
            )
        return wanted


def _state(desired: Desired | None) -> dict[str, object]:
    if desired is None:
        return {"mode": "unknown", "reason": "the desired state was not read yet"}
    return desired.as_json()


async def _who_and_why(request: web.Request) -> tuple[str, str]:
    """``reason`` and ``by`` of the JSON body (both optional; ``by`` defaults to the peer)."""
    body: Any = {}
    if request.can_read_body:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            message = 'the body is not JSON: send {"reason": "...", "by": "..."}'
            raise ValueError(message) from None
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object with optional reason and by")
    reason, actor = body.get("reason", ""), body.get("by", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ValueError(f"reason must be a string of at most {MAX_REASON} characters")
    if not isinstance(actor, str) or len(actor) > MAX_ACTOR:
        raise ValueError(f"by must be a string of at most {MAX_ACTOR} characters")
    return reason, actor or f"api@{request.remote or 'unknown'}"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


PAUSE_MODES = ("paused", "stop_buys", "cancel_all", "liquidate")


def paused_mode(desired: Desired) -> str | None:
    """The ``mode`` label of ``quantmesh_symbol_paused`` for ``desired``; None when active."""
    if desired.mode == "active":
        return None
    if desired.mode == "paused" and desired.cancel_orders:
        return "cancel_all"
    return desired.mode


def report_control(metrics: Metrics) -> Callable[[str, Desired], None]:
    """The board's ``on_change``: ``quantmesh_symbol_paused`` follows each symbol's mode."""

    def report(symbol: str, desired: Desired) -> None:
        current = paused_mode(desired)
        for mode in PAUSE_MODES:
            metrics.symbol_paused.labels(symbol, mode).set(1 if mode == current else 0)

    return report
