"""Client order ids on the wire: our ids, rewritten for exchanges with a narrower charset.

Our ids (``qm.3fa9c2.B-12.4``, see ``quantmesh.grid.ids``) fit Binance and most
exchanges. Some accept letters and digits only (OKX ``clOrdId``); for those the ``.`` and
``-`` are written as ``x`` and ``n``, letters that never occur in our ids otherwise (the
tag is lowercase hex, the rest digits, ``B``/``S`` and the ``qm`` prefix), so the mapping
is reversible. Foreign ids are returned untouched.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Literal

IdStyle = Literal["auto", "as_is", "alphanumeric"]

# Exchanges whose client order ids are letters and digits only (ccxt ids).
ALPHANUMERIC_EXCHANGES = frozenset({"okx", "okxus", "myokx"})
_ENCODED = re.compile(r"^qmx[0-9a-f]{6}x[BS]n?\d+x\d+$")


class IdCodec:
    def __init__(self, exchange_id: str, style: IdStyle = "auto") -> None:
        if style == "auto":
            style = "alphanumeric" if exchange_id in ALPHANUMERIC_EXCHANGES else "as_is"
        self.style = style

    def encode(self, client_order_id: str) -> str:
        if self.style == "as_is" or not client_order_id.startswith("qm."):
            return client_order_id
        return client_order_id.replace(".", "x").replace("-", "n")

    def decode(self, wire_id: str) -> str:
        if self.style == "as_is" or not _ENCODED.match(wire_id):
            return wire_id
        return wire_id.replace("x", ".").replace("n", "-")


class OrderIds:
    """Client order id -> exchange order id, for exchanges whose lookups need the latter.

    Bounded: ids of open orders are kept until the order is seen closed, then among the
    ``recent`` most recently closed (a lookup or cancel often follows the close); past
    ``limit`` open ids (closes never seen, e.g. an order stream that missed them) the least
    recently used goes. Only our own orders are added (see ``CcxtExchange``).
    """

    def __init__(self, recent: int = 1024, limit: int = 20_000) -> None:
        self._open: OrderedDict[str, str] = OrderedDict()
        self._closed: OrderedDict[str, str] = OrderedDict()
        self._recent = recent
        self._limit = limit
        self.evicted = 0  # open ids dropped by the bound (their close never seen)

    def get(self, client_order_id: str) -> str:
        """The exchange order id, or ``""`` when unknown (ccxt then uses the client id)."""
        return self._open.get(client_order_id) or self._closed.get(client_order_id) or ""

    def note(self, client_order_id: str, exchange_order_id: str, is_open: bool) -> None:
        if not client_order_id or not exchange_order_id:
            return
        if is_open:
            self._closed.pop(client_order_id, None)
            self._open[client_order_id] = exchange_order_id
            self._open.move_to_end(client_order_id)
            if len(self._open) > self._limit:
                self._open.popitem(last=False)
                self.evicted += 1
        else:
            self._open.pop(client_order_id, None)
            self._closed[client_order_id] = exchange_order_id
            self._closed.move_to_end(client_order_id)
            if len(self._closed) > self._recent:
                self._closed.popitem(last=False)

    def __len__(self) -> int:
        return len(self._open) + len(self._closed)

    def sizes(self) -> dict[str, int]:
        return {"open": len(self._open), "recently_closed": len(self._closed)}
