"""Settings and stored data -> what each symbol's backtest needs.

Market rules (tick, lot, minimums) and the fee, first found wins:

1. the configured simulated market of that symbol, when ``exchange.name`` is
   ``simulated`` (its ``fee_rate`` too) - the daemon's own rules for that config;
2. the rules stored with the candles by ``data download`` (the exchange's listing);

``--fee-rate`` overrides the fee either way.

Prices come from the symbol's stored trades or candles (``source``: ``auto`` takes the
trades when they are there). The fill rule, unless given: the configured exchange's
(``exchange.simulated.fill`` or ``exchange.paper.fill``), else ``touch`` on candles (the
path reaches each price exactly) and ``through`` on trades (paper trading's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from quantmesh.config import Settings, SymbolSettings
from quantmesh.domain import MarketRules
from quantmesh.exchange.sim.matching import FillRule
from quantmesh.research.engine import SymbolSetup
from quantmesh.research.errors import ResearchError
from quantmesh.research.history import history_path, read_meta, trades_path
from quantmesh.research.trades import TRADES

__all__ = [
    "SOURCES",
    "SymbolSource",
    "data_exchange",
    "default_fill",
    "market_of",
    "rules_from_meta",
    "symbol_sources",
]

SOURCES = ("auto", "candles", TRADES)


@dataclass(frozen=True, slots=True)
class SymbolSource:
    """One configured symbol: its settings, where its prices are (candles or trades), its
    market, fee and fill rule."""

    settings: SymbolSettings
    path: Path
    rules: MarketRules
    fee_rate: Decimal
    kind: str = "candles"  # or "trades"
    fill: FillRule = "touch"

    def setup(self, settings: SymbolSettings | None = None) -> SymbolSetup:
        """The backtest setup, with ``settings`` instead of the configured ones if given."""
        chosen = self.settings if settings is None else settings
        return SymbolSetup(chosen.grid_params(), self.rules, self.fee_rate)


def data_exchange(settings: Settings, chosen: str | None) -> str:
    """Whose candles: ``--exchange``, else the configured exchange (paper trading: the
    venue it trades on), else ``binance``."""
    if chosen:
        return chosen
    exchange = settings.exchange
    if exchange.name == "paper" and exchange.paper.source:
        return exchange.paper.source
    return "binance" if exchange.name in ("simulated", "paper") else exchange.name


def rules_from_meta(symbol: str, meta: dict[str, Any]) -> tuple[MarketRules, Decimal] | None:
    """The market rules and taker fee stored with a candle file, if it has them."""
    market = meta.get("market")
    if not isinstance(market, dict):
        return None
    base, quote = symbol.split("/")
    try:
        tick = Decimal(str(market["tick_size"]))
        lot = Decimal(str(market["lot_size"]))
        rules = MarketRules(
            symbol=symbol,
            base=base,
            quote=quote,
            tick_size=tick,
            lot_size=lot,
            min_amount=Decimal(str(market.get("min_amount") or lot)),
            min_notional=Decimal(str(market.get("min_notional") or 0)),
        )
        fee = Decimal(str(market.get("taker_fee") or "0.001"))
    except (KeyError, InvalidOperation, ValueError):
        return None
    if not (rules.tick_size > 0 and rules.lot_size > 0):
        return None
    return rules, fee


def market_of(settings: Settings, symbol: str, path: Path) -> tuple[MarketRules, Decimal]:
    """The rules and fee a backtest of ``symbol`` uses (see the module docstring)."""
    simulated = settings.exchange.simulated
    if settings.exchange.name == "simulated" and symbol in simulated.markets:
        market = simulated.markets[symbol]
        base, quote = symbol.split("/")
        rules = MarketRules(
            symbol=symbol,
            base=base,
            quote=quote,
            tick_size=market.tick_size,
            lot_size=market.lot_size,
            min_amount=market.lot_size,
            min_notional=market.min_notional,
        )
        return rules, simulated.fee_rate
    stored = rules_from_meta(symbol, read_meta(path)) if path.is_file() else None
    if stored is None:
        raise ResearchError(
            f"{symbol}: no market rules (tick, lot, minimums): neither a simulated market "
            f"in the config nor rules stored with {path}; download the data again"
        )
    return stored


def default_fill(settings: Settings, kind: str) -> FillRule:
    """The fill rule when none is given (see the module docstring)."""
    exchange = settings.exchange
    if exchange.name == "simulated":
        return exchange.simulated.fill
    if exchange.name == "paper":
        return exchange.paper.fill
    return "through" if kind == TRADES else "touch"


def symbol_sources(
    settings: Settings,
    data_dir: Path,
    exchange: str,
    timeframe: str,
    fee_rate: Decimal | None,
    source: str = "candles",
    fill: FillRule | None = None,
) -> list[SymbolSource]:
    """Every configured symbol with its price file, rules, fee and fill rule; a missing
    file raises."""
    sources: list[SymbolSource] = []
    for symbol in settings.trading.symbols:
        name = symbol.symbol
        path = history_path(data_dir, exchange, name, timeframe)
        kind = "candles"
        trades = trades_path(data_dir, exchange, name)
        if source == TRADES or (source == "auto" and trades.is_file()):
            path, kind = trades, TRADES
            if not path.is_file():
                raise ResearchError(
                    f"{name}: no trades from {exchange} at {path}; fetch them: quantmesh data "
                    f"download --trades --exchange {exchange} --symbol {name} --since "
                    f"YYYY-MM-DD --data-dir {data_dir}"
                )
        elif not path.is_file():
            raise ResearchError(
                f"{name}: no {timeframe} candles from {exchange} at {path}; fetch "
                f"them: quantmesh data download --exchange {exchange} --symbol "
                f"{name} --timeframe {timeframe} --since YYYY-MM-DD "
                f"--data-dir {data_dir}"
            )
        rules, fee = market_of(settings, name, path)
        sources.append(
            SymbolSource(
                symbol,
                path,
                rules,
                fee if fee_rate is None else fee_rate,
                kind,
                fill or default_fill(settings, kind),
            )
        )
    return sources
