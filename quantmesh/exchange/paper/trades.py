"""The public trades of one symbol, as the paper exchange reads them: ``watch_trades`` while
it works, ``fetch_trades`` from the newest trade seen after each stream failure, after
each ``price_stale_after`` without a trade, and instead of the stream for
``stream_retry_after`` seconds after ``stream_failures_before_polling`` failures in a row
(the ccxt adapter's stream-or-poll loop, ``quantmesh.exchange.ccxt.streams``).

Trades are handed on oldest first, and only those printed at or after the newest one
already handed on (a trade printed at that same millisecond may come again: matching a
price twice changes nothing). Trades printed before the loop started are never used: a
paper order is filled by what prints while the daemon watches.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from quantmesh.errors import ExchangeError
from quantmesh.exchange.ccxt.convert import dec
from quantmesh.exchange.ccxt.streams import _STREAM_ERRORS, StreamSettings
from quantmesh.exchange.ccxt.streams import _Loop as StreamLoop

__all__ = ["Print", "TradeLoop"]

Print = tuple[int, Decimal]  # (time in epoch milliseconds, price)
_MIN_FULL_PAGE = 100  # a REST page this long may have more after it: fetch the next one
_MAX_PAGES = 10  # pages per catch-up; the next catch-up goes on from there


class TradeLoop(StreamLoop):
    """Hands ``on_prints`` every public trade of one symbol, stream first, REST behind it."""

    capability = "watchTrades"

    def __init__(
        self,
        symbol: str,
        client: Any,
        settings: StreamSettings,
        *,
        fetch_trades: Callable[[str, int], Awaitable[list[dict[str, Any]]]],
        on_prints: Callable[[list[Print]], None],
        wall: Callable[[], float] = time.time,
        **timing: Any,
    ) -> None:
        super().__init__(symbol, client, settings, **timing)
        self._fetch_trades = fetch_trades
        self._on_prints = on_prints
        self.mark_ms = int(wall() * 1000)  # the newest trade handed on (at first: the start)
        self.last_trade_at: float | None = None  # monotonic, the last trade received

    async def run(self) -> None:
        settings = self._settings
        try:
            while True:
                if self.streaming():
                    try:
                        trades = await self._pending.next(
                            lambda: self._client.watch_trades(self.symbol),
                            settings.price_stale_after,
                        )
                    except TimeoutError:
                        await self.catch_up()  # quiet market, or a silent stream: check
                        continue
                    except _STREAM_ERRORS as exc:
                        await self._stream_failed("trade_stream", exc)
                        await self.catch_up()  # what printed while the stream was down
                        continue
                    self._stream_ok()
                    self._hand_on(trades)
                    continue
                await self.catch_up()
                await self._sleep(settings.price_poll_interval)
        finally:
            await self._pending.cancel()

    async def catch_up(self) -> None:
        """Fetch the trades printed since the newest one handed on, page after page."""
        for _ in range(_MAX_PAGES):
            before = self.mark_ms
            try:
                page = await self._fetch_trades(self.symbol, before)
            except ExchangeError as exc:
                await self._pause("trade_poll_failed", exc)
                return
            self._backoff.reset()
            self._hand_on(page)
            if len(page) < _MIN_FULL_PAGE or self.mark_ms == before:
                return

    def _hand_on(self, trades: list[dict[str, Any]]) -> None:
        prints = sorted(p for p in map(_print, trades) if p is not None and p[0] >= self.mark_ms)
        if not prints:
            return
        self.last_trade_at = self._clock()
        self.mark_ms = prints[-1][0]
        self._on_prints(prints)


def _print(trade: dict[str, Any]) -> Print | None:
    """A ccxt trade's time and price; None for one without them."""
    timestamp, price = trade.get("timestamp"), trade.get("price")
    if timestamp is None or not price:
        return None
    value = dec(price)
    return (int(timestamp), value) if value > 0 else None
