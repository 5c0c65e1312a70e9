"""Whose candles a backtest reads when the command line does not say."""

from __future__ import annotations

from quantmesh.config import Settings
from quantmesh.research.setup import data_exchange
from tests.config.support import MINIMAL, parse


def settings(exchange: str) -> Settings:
    return parse(MINIMAL + exchange)


def test_the_configured_venue_else_binance_unless_the_command_line_says() -> None:
    assert data_exchange(settings(""), None) == "binance"  # simulated: no venue of its own
    assert data_exchange(settings("exchange: {name: okx}\n"), None) == "okx"
    paper = settings("exchange: {name: paper, paper: {source: kraken}}\n")
    assert data_exchange(paper, None) == "kraken"  # paper trades on the venue's prices
    assert data_exchange(paper, "bybit") == "bybit"
