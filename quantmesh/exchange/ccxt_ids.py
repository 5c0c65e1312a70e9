"""Client order ids on the wire: our ids, rewritten for exchanges with a narrower charset.

Our ids (``qm.3fa9c2.B-12.4``, see ``quantmesh.trading.ids``) fit Binance and most
exchanges. Some accept letters and digits only (OKX ``clOrdId``); for those the ``.`` and
``-`` are written as ``x`` and ``n``, letters that never occur in our ids otherwise (the
tag is lowercase hex, the rest digits, ``B``/``S`` and the ``qm`` prefix), so the mapping
is reversible. Foreign ids are returned untouched.
"""

from __future__ import annotations

import re
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
