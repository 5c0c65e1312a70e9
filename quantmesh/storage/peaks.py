"""``SqlPeakStore``: the equity peak of each symbol's risk watch (``models.risk_peaks``).

A drawdown is measured from the highest equity seen since the symbol was last resumed; the
peak is kept here so a restart or a take-over does not start it again from the equity of
that moment. Only the symbol's owner writes its row. Nothing is buffered: a peak not
stored is written again with the next change (the risk guard retries).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from sqlalchemy import Connection, select

from quantmesh.storage import models
from quantmesh.storage.rows import checked
from quantmesh.storage.runner import Runner
from quantmesh.storage.statements import scoped, upsert

_peaks = models.risk_peaks
_PEAK: Final = select(_peaks.c.peak, _peaks.c.capital).where(*scoped(_peaks))


class SqlPeakStore:
    """The risk peaks of one exchange's symbols, on ``runner`` (not owned by the store)."""

    def __init__(self, runner: Runner, exchange: str) -> None:
        if not exchange or len(exchange) > models.EXCHANGE_LEN:
            raise ValueError(f"exchange name must be 1 to {models.EXCHANGE_LEN} characters")
        self._runner = runner
        self._exchange = exchange
        self._upsert = upsert(
            runner.dialect, _peaks, ("exchange", "symbol"), ("peak", "capital", "at")
        )

    async def load_peak(self, symbol: str) -> tuple[Decimal, Decimal] | None:
        """The stored peak of ``symbol`` and the capital committed then, if any."""

        def read(conn: Connection) -> tuple[Decimal, Decimal] | None:
            row = conn.execute(_PEAK, {"k_exchange": self._exchange, "k_symbol": symbol}).first()
            return None if row is None else (row.peak, row.capital)

        return await self._runner.run("load_peak", read, write=False)

    async def save_peak(self, symbol: str, peak: Decimal, capital: Decimal, at: float) -> None:
        """``peak`` as the symbol's (higher or, after a resume, lower than the stored one)."""
        row = checked(
            _peaks,
            {
                "exchange": self._exchange,
                "symbol": symbol,
                "peak": peak,
                "capital": capital,
                "at": at,
            },
        )

        def write(conn: Connection) -> None:
            conn.execute(self._upsert, [row])

        await self._runner.run("save_peak", write, write=True)
