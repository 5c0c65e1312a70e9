"""``diff``: one line per change between the settings in force and the file; ``effective``:
the settings in force after a reload."""

from __future__ import annotations

from typing import Any

import yaml

from quantmesh.config import Settings, parse_settings
from quantmesh.control.reload import diff, effective


def _settings(**changes: Any) -> Settings:
    symbols = changes.pop(
        "symbols",
        [
            {"symbol": "ETH/USDT", "price_interval": 5, "buy_window_size": 3},
            {"symbol": "BTC/USDT", "price_interval": 100},
        ],
    )
    trading = {"symbols": symbols, **changes.pop("trading", {})}
    data: dict[str, Any] = {"trading": trading, **changes}
    return parse_settings(yaml.safe_dump(data), env={})


def test_the_same_settings_are_no_change() -> None:
    plan = diff(_settings(), _settings())
    assert plan.empty and plan.lines() == []


def test_a_window_change_is_one_line_naming_the_symbol() -> None:
    new = _settings(
        symbols=[
            {"symbol": "ETH/USDT", "price_interval": 5, "buy_window_size": 5},
            {"symbol": "BTC/USDT", "price_interval": 100},
        ]
    )
    plan = diff(_settings(), new)
    assert plan.lines() == ["ETH/USDT: buy_window_size 3 -> 5"]
    assert [c.symbol for c in plan.changed] == ["ETH/USDT"]
    assert not plan.changed[0].step_changed


def test_a_step_change_is_marked() -> None:
    new = _settings(symbols=[{"symbol": "ETH/USDT", "price_interval": 6, "buy_window_size": 3},
                             {"symbol": "BTC/USDT", "price_interval": 100}])  # fmt: skip
    plan = diff(_settings(), new)
    assert plan.lines() == ["ETH/USDT: price_interval 5 -> 6"]
    assert plan.changed[0].step_changed


def test_symbols_added_and_removed() -> None:
    new = _settings(
        symbols=[
            {"symbol": "ETHUSDT", "price_interval": 5, "buy_window_size": 3},
            {"symbol": "SOL/USDT", "price_interval": 1},
        ]
    )
    plan = diff(_settings(), new)
    assert plan.lines() == ["symbol added: SOL/USDT", "symbol removed: BTC/USDT"]
    assert plan.added == ("SOL/USDT",) and plan.removed == ("BTC/USDT",)


def test_the_order_of_the_symbols_is_no_change() -> None:
    new = _settings(
        symbols=[
            {"symbol": "BTC/USDT", "price_interval": 100},
            {"symbol": "ETH/USDT", "price_interval": 5, "buy_window_size": 3},
        ]
    )
    assert diff(_settings(), new).empty


def test_live_trading_settings_and_settings_that_need_a_restart() -> None:
    new = _settings(
        trading={"shutdown_grace": 3, "cancel_on_exit": True, "reconcile_interval": 30},
        database={"dsn": "./other.db"},
        http={"port": 9400, "token": "s3cret-token"},
        exchange={"api_key": "key-123456"},
    )
    lines = diff(_settings(), new).lines()
    assert lines == [
        "trading: cancel_on_exit false -> true",
        "trading: shutdown_grace 5 -> 3",
        "exchange.api_key: needs a restart (not applied)",
        "database.dsn: needs a restart (not applied)",
        "http.port: needs a restart (not applied)",
        "http.token: needs a restart (not applied)",
        "trading.reconcile_interval: needs a restart (not applied)",
    ]
    assert not any("s3cret" in line or "key-123456" in line for line in lines)


def test_refused_symbols_say_why_and_are_not_applied() -> None:
    new = _settings(
        symbols=[
            {"symbol": "ETH/USDT", "price_interval": 6, "buy_window_size": 3},
            {"symbol": "BTC/USDT", "price_interval": 100},
            {"symbol": "SOL/USDT", "price_interval": 1},
        ]
    )
    plan = diff(_settings(), new)
    entries = plan.entries({"ETH/USDT": "refused: holds orders", "SOL/USDT": "needs a restart"})
    assert entries == [
        ("symbol added: SOL/USDT: needs a restart", False),
        ("ETH/USDT: price_interval 5 -> 6: refused: holds orders", False),
    ]


def test_effective_keeps_what_needs_a_restart_and_refused_symbols() -> None:
    old = _settings()
    new = _settings(
        symbols=[
            {"symbol": "ETH/USDT", "price_interval": 6, "buy_window_size": 4},
            {"symbol": "SOL/USDT", "price_interval": 1},
        ],
        trading={"shutdown_grace": 3, "reconcile_interval": 30},
        database={"dsn": "./other.db"},
    )
    now = effective(old, new, kept={"ETH/USDT": "refused"})
    assert [s.symbol for s in now.symbols] == ["ETH/USDT", "SOL/USDT"]
    assert now.symbols[0] == old.symbols[0]  # its change refused: as before
    assert now.trading.shutdown_grace == 3 and now.trading.reconcile_interval == 60
    assert now.database == old.database
    again = diff(now, new)
    assert again.lines() == [
        "ETH/USDT: price_interval 5 -> 6",
        "ETH/USDT: buy_window_size 3 -> 4",
        "database.dsn: needs a restart (not applied)",
        "trading.reconcile_interval: needs a restart (not applied)",
    ]
    assert effective(old, new, kept={"SOL/USDT": "no"}).symbols[-1].symbol == "ETH/USDT"


def test_a_risk_limit_change_is_one_line_by_its_dotted_key() -> None:
    new = _settings(
        symbols=[
            {"symbol": "ETH/USDT", "price_interval": 5, "buy_window_size": 3,
             "risk": {"stop_loss_price": 1800, "actions": {"stop_loss": "stop_buys"}}},
            {"symbol": "BTC/USDT", "price_interval": 100},
        ]
    )  # fmt: skip
    plan = diff(_settings(), new)
    assert plan.lines() == [
        "ETH/USDT: risk.stop_loss_price none -> 1800",
        "ETH/USDT: risk.actions.stop_loss halt -> stop_buys",
    ]
    assert not plan.changed[0].step_changed
