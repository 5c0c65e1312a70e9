"""Building the ``PaperExchange`` from the ``exchange`` settings (``name: paper``)."""

from __future__ import annotations

from quantmesh.config.schema import ExchangeSettings
from quantmesh.errors import StartupError
from quantmesh.exchange.ccxt.client import create_client, stream_settings
from quantmesh.exchange.ccxt.exchange import CcxtExchange, CcxtSettings
from quantmesh.exchange.paper.account import PaperAccount
from quantmesh.exchange.paper.exchange import PaperExchange


def build_paper_exchange(settings: ExchangeSettings) -> PaperExchange:
    """Paper trading on ``exchange.paper.source``'s public data, without keys (the settings
    refuse any); ``urls``, ``options``, timeouts and stream settings apply to the source."""
    paper = settings.paper
    if paper.source is None:  # refused by the settings; kept for callers building by hand
        raise StartupError("exchange.paper.source: required with exchange.name paper")
    client = create_client(
        paper.source,
        sandbox=settings.sandbox,
        urls=settings.urls,
        options=settings.options,
        timeout=settings.request_timeout,
        rate_limit=settings.rate_limit,
    )
    stream = stream_settings(settings)
    venue = CcxtExchange(client, CcxtSettings(stream=stream, verify_credentials=False))
    account = PaperAccount(dict(paper.balances), paper.state_path, paper.fill)
    return PaperExchange(venue, account, stream)
