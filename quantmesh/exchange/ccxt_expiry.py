"""Which ccxt exchanges can carry a request expiry the exchange enforces, and how."""

from __future__ import annotations

# exchange id -> how its requests carry an expiry (documented in the README)
_MECHANISMS: dict[str, str] = {
    "binance": "timestamp + recvWindow",
}


def expiry_mechanism(exchange_id: str) -> str | None:
    """How requests to ``exchange_id`` expire on the exchange's side; ``None`` when they
    cannot (a request delayed past its lease may then still execute)."""
    return _MECHANISMS.get(exchange_id)
