"""Shared by the research tests: a market, grids and candle files."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from quantmesh.domain import MarketRules
from quantmesh.grid.state import GridParams
from quantmesh.research.candles import Candles
from quantmesh.research.engine import SymbolSetup
from quantmesh.research.history import history_path, trades_path, write_candles, write_trades
from quantmesh.research.trades import Trades

RULES = MarketRules(
    symbol="ETH/USDT",
    base="ETH",
    quote="USDT",
    tick_size=Decimal("0.01"),
    lot_size=Decimal("0.001"),
    min_amount=Decimal("0.001"),
    min_notional=Decimal(5),
)
FEE = Decimal("0.001")


def setup(**changes: object) -> SymbolSetup:
    """A 10-USDT grid anchored at 100 (unless changed), 100 USDT a level, windows of 3."""
    values: dict[str, object] = {
        "symbol": "ETH/USDT",
        "interval": Decimal(10),
        "order_quantity": Decimal(100),
        "buy_window": 3,
        "sell_window": 3,
        "anchor_price": Decimal(100),
    }
    values.update(changes)
    return SymbolSetup(GridParams(**values), RULES, FEE)  # type: ignore[arg-type]


def candles(*rows: tuple[float, float, float, float], start_ms: int = 0) -> Candles:
    """1-minute candles of ``(open, high, low, close)``."""
    out = Candles()
    for i, (o, h, low, c) in enumerate(rows):
        out.append((start_ms + i * 60_000, o, h, low, c, 1.0))
    return out


CONFIG = """
exchange:
  name: simulated
  simulated:
    fee_rate: 0.001
    markets:
      ETHUSDT: {price: 2000, tick_size: 0.01, lot_size: 0.0001, min_notional: 5}
trading:
  symbols:
    - symbol: ETHUSDT
      price_interval: 5
      order_quantity: 30
      buy_window_size: 5
      sell_window_size: 5
"""


def store(data_dir: Path, symbol: str, data: Candles, exchange: str = "binance") -> Path:
    path = history_path(data_dir, exchange, symbol, "1m")
    write_candles(path, data, {"symbol": symbol, "timeframe": "1m"})
    return path


def trades_along(data: Candles) -> Trades:
    """Four prints a candle along its path (open, nearer extreme, farther extreme, close),
    as the simulator serves its seeded past."""
    out = Trades()
    for i in range(len(data)):
        o, h, low, c = data.open[i], data.high[i], data.low[i], data.close[i]
        path = (o, h, low, c) if h - o <= o - low else (o, low, h, c)
        for j, price in enumerate(path):
            out.append({"timestamp": data.ts[i] + j * 15_000, "id": str(i * 4 + j),
                        "price": price, "amount": 0.5, "side": "buy"})  # fmt: skip
    return out


def store_trades(data_dir: Path, symbol: str, data: Trades, exchange: str = "binance") -> Path:
    path = trades_path(data_dir, exchange, symbol)
    write_trades(path, data, {"symbol": symbol, "timeframe": "trades"})
    return path
