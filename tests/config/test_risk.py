"""``trading.symbols[].risk``: limits read as the risk watch wants them; bad ones refused
with one line each, naming the key."""

from __future__ import annotations

from decimal import Decimal

from quantmesh.config import render_effective

from .support import parse, problems_of, with_symbol


def test_risk_settings_become_limits_with_their_actions() -> None:
    settings = parse(with_symbol(risk="{stop_loss_price: 1800, take_profit_price: 2600, "
                                      "max_drawdown: '15%', max_loss: 200, "
                                      "actions: {stop_loss: stop_buys}}"))  # fmt: skip
    limits = settings.trading.symbols[0].risk.limits()
    assert limits.stop_loss_price == Decimal(1800) and limits.take_profit_price == Decimal(2600)
    assert limits.max_drawdown is None and limits.max_drawdown_percent == Decimal(15)
    assert limits.max_loss == Decimal(200)
    assert limits.action("stop_loss") == "stop_buys" and limits.action("max_loss") == "halt"
    quote = parse(with_symbol(risk="{max_drawdown: 150.5}")).trading.symbols[0].risk.limits()
    assert quote.max_drawdown == Decimal("150.5") and quote.max_drawdown_percent is None
    assert not parse(with_symbol()).trading.symbols[0].risk.limits().any
    text = with_symbol(risk="{allow_market: true, market_after: 30, market_slippage_percent: 2}")
    liquidation = parse(text).trading.symbols[0].risk.liquidation()
    assert liquidation.allow_market and liquidation.market_after == 30.0
    assert liquidation.market_slippage == Decimal("0.02") and liquidation.reprice_interval == 2.0


def test_bad_risk_settings_are_one_line_each() -> None:
    assert problems_of(with_symbol(risk="{stop_loss_price: 2000, take_profit_price: 1900}")) == [
        "trading.symbols[0].risk.take_profit_price: must be above stop_loss_price (2000)"
    ]
    assert problems_of(with_symbol(risk="{max_drawdown: '150%'}")) == [
        (
            "trading.symbols[0].risk.max_drawdown: a percentage must be above 0% and at most "
            "100% ('15%')"
        )
    ]
    assert problems_of(with_symbol(risk="{max_drawdown: lots}")) == [
        (
            "trading.symbols[0].risk.max_drawdown: must be an amount in quote currency (150) or "
            "a percentage ('15%')"
        )
    ]
    assert problems_of(with_symbol(risk="{actions: {stop_loss: sell_all}}")) == [
        (
            "trading.symbols[0].risk.actions.stop_loss: must be one of stop_buys, halt, "
            "liquidate (got 'sell_all')"
        )
    ]
    assert problems_of(with_symbol(risk="{reprice_interval: 0}")) == [
        "trading.symbols[0].risk.reprice_interval: must be greater than 0 (got 0)"
    ]
    assert problems_of(with_symbol(risk="{market_slippage_percent: 100}")) == [
        "trading.symbols[0].risk.market_slippage_percent: must be less than 100 (got 100)"
    ]
    assert problems_of(with_symbol(risk="{max_loss: -5}")) == [
        "trading.symbols[0].risk.max_loss: must be greater than 0 (got -5)"
    ]


def test_shared_defaults_are_written_out_in_full() -> None:
    text = "trading:\n  symbols:\n    - {symbol: ETHUSDT, price_interval: 1}\n" \
           "    - {symbol: BTCUSDT, price_interval: 5}\n"  # fmt: skip
    out = render_effective(parse(text))
    assert "&id" not in out and "*id" not in out
    assert out.count("order_quantity: 30\n") == 2


TWO_QUOTES = """\
trading:
  symbols:
    - {symbol: ETHUSDT, price_interval: 1}
    - {symbol: ETHBTC, price_interval: 0.0001}
"""


def test_instance_limits_are_read_with_their_actions() -> None:
    text = with_symbol() + "risk: {max_daily_loss: 500, max_total_position: 20000}\n"
    limits = parse(text).risk.limits()
    assert limits.max_daily_loss == Decimal(500) and limits.max_total_position == Decimal(20000)
    assert limits.action("max_daily_loss") == "halt"
    assert limits.action("max_total_position") == "stop_buys"
    text = with_symbol() + "risk: {max_daily_loss: 500, actions: {max_daily_loss: liquidate}}\n"
    assert parse(text).risk.limits().action("max_daily_loss") == "liquidate"
    assert not parse(with_symbol()).risk.limits().any


def test_instance_limits_need_one_quote_currency_and_positive_amounts() -> None:
    assert problems_of(TWO_QUOTES + "risk: {max_total_position: 1000}\n") == [
        (
            "risk.max_total_position: adds amounts across symbols: the symbols are quoted in "
            "BTC, USDT; trade one quote currency"
        )
    ]
    assert parse(TWO_QUOTES).risk.limits().any is False  # no limit: any quotes will do
    assert problems_of(with_symbol() + "risk: {max_daily_loss: 0}\n") == [
        "risk.max_daily_loss: must be greater than 0 (got 0)"
    ]
