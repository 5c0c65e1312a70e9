"""Paper exchanges on the simulator's public data: ccxt's real ``binance`` class pointed at
``quantmesh sim-exchange``, no keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from quantmesh.config.schema import ExchangeSettings
from quantmesh.domain import OrderRequest
from quantmesh.exchange.paper.build import build_paper_exchange
from quantmesh.exchange.paper.exchange import PaperExchange
from tests.exchange.sim.server.support import BINANCE_OPTIONS, binance_urls


def paper_settings(port: int, state: Path, **changes: Any) -> ExchangeSettings:
    paper: dict[str, Any] = {"source": "binance", "state_path": state}
    paper["balances"] = {"USDT": 100_000, "ETH": 10}
    paper.update(changes.pop("paper", {}))
    fields: dict[str, Any] = {
        "name": "paper",
        "paper": paper,
        "urls": changes.pop("urls", binance_urls(port)),
        "options": dict(BINANCE_OPTIONS),
        "request_timeout": 5,
        "price_stale_after": 5,
        "price_poll_interval": 0.2,
        "reconnect_max_delay": 0.5,
        **changes,
    }
    return ExchangeSettings.model_validate(fields)


def paper_exchange(port: int, state: Path, **changes: Any) -> PaperExchange:
    return build_paper_exchange(paper_settings(port, state, **changes))


def buy(price: str, cid: str, amount: str = "0.01", symbol: str = "ETH/USDT") -> OrderRequest:
    return OrderRequest(symbol, "buy", Decimal(price), Decimal(amount), cid)


def sell(price: str, cid: str, amount: str = "0.01", symbol: str = "ETH/USDT") -> OrderRequest:
    return OrderRequest(symbol, "sell", Decimal(price), Decimal(amount), cid)


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
