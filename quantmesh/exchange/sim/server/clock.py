"""The simulator's server clock, and its request expiry check.

The clock is the wall clock plus a skew (``--clock-skew``), so a client can measure its
offset to the exchange and sign with it. Everything the simulator answers with as "now" -
``/api/v3/time``, ``exchangeInfo``, event times - and every expiry check reads this clock.
Order and fill times are the matching engine's (the wall clock without the skew), as in
``/_sim/orders``.

A signed request is checked twice, as Binance does: when it arrives, and again when it is
processed (after an injected latency, right before the matching engine sees it), so a
request that waited past its ``recvWindow`` is refused, not executed late.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping

from quantmesh.exchange.sim.server import binance as wire
from quantmesh.exchange.sim.server.binance import ApiError

EXPIRED = -1021  # the Binance code of a request outside its recvWindow


class ServerClock:
    """Wall clock plus ``skew`` seconds; ``expired`` counts refusals by call name."""

    def __init__(self, skew: float = 0.0) -> None:
        self.skew = skew
        self.expired: Counter[str] = Counter()

    @property
    def skew(self) -> float:
        return self._skew

    @skew.setter
    def skew(self, seconds: float) -> None:
        if not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise ValueError(f"clock skew must be a finite number of seconds, got {seconds!r}")
        self._skew = float(seconds)

    def now_us(self) -> int:
        return time.time_ns() // 1000 + round(self._skew * 1_000_000)

    def now_ms(self) -> int:
        return self.now_us() // 1000

    def check(self, params: Mapping[str, str], arrived_us: int, call: str) -> None:
        """``ApiError`` unless ``params`` (timestamp, recvWindow) were valid both when the
        call arrived (``arrived_us``, this clock) and now; -1021 refusals are counted."""
        try:
            wire.check_timestamp(params, arrived_us)
            wire.check_timestamp(params, self.now_us())
        except ApiError as exc:
            if exc.code == EXPIRED:
                self.expired[call] += 1
            raise
