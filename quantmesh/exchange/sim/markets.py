"""Settings -> simulated markets (rules, start price, feed) and the simulated exchange.

Shared by the daemon's ``simulated`` exchange and the ``quantmesh sim-exchange`` server,
so both run the same markets, feeds and engine.
"""

from __future__ import annotations

from pathlib import Path

from quantmesh.config.schema import SimulatedExchangeSettings
from quantmesh.domain import MarketRules
from quantmesh.exchange.sim.feeds import FeedFactory, csv_replay, random_walk
from quantmesh.exchange.sim.simulated import SimMarket, SimulatedExchange


def sim_markets(settings: SimulatedExchangeSettings) -> dict[str, SimMarket]:
    """One ``SimMarket`` (rules, start price, feed) per configured market."""
    markets: dict[str, SimMarket] = {}
    for symbol, market in settings.markets.items():
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
        feed: FeedFactory
        if market.feed.type == "csv":
            assert market.feed.path is not None  # validated by the settings
            feed = csv_replay(market.feed.path, market.feed.speed)
        else:
            feed = random_walk(market.feed.volatility, market.feed.interval, market.feed.seed)
        markets[symbol] = SimMarket(rules, market.price, feed)
    return markets


def build_simulated(
    settings: SimulatedExchangeSettings, state_path: Path | None
) -> SimulatedExchange:
    """The simulated exchange of ``settings``, persisted to ``state_path`` (None: in memory)."""
    return SimulatedExchange(
        sim_markets(settings),
        dict(settings.balances),
        settings.fee_rate,
        state_path,
        fill_rule=settings.fill,
    )
