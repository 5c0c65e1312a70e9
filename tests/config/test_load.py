"""Loading settings (``quantmesh.config.load``): files, the shipped default config, the
instance id from the environment."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.config import load_settings
from quantmesh.errors import ConfigError

from .support import MINIMAL, REPO, parse, problems_of


def test_simulated_config_does_not_import_ccxt() -> None:
    code = (
        "import sys; from quantmesh.config import parse_settings; "
        f"parse_settings({MINIMAL!r}, env={{}}); print('ccxt' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "False"


def test_default_config_file_loads() -> None:
    s = load_settings(REPO / "config" / "config.yaml", env={})
    assert s.instance.id == "quantmesh-1"
    assert s.exchange.name == "simulated"
    assert s.database.type == "sqlite"
    assert s.database.dsn.get_secret_value() == "./data/quantmesh.db"
    assert s.distributed_lock.enabled is False
    assert s.exchange.simulated.balances == {"USDT": Decimal(100000)}
    eth, btc = s.symbols
    assert (eth.symbol, eth.price_interval, eth.order_quantity) == (
        "ETH/USDT",
        Decimal(5),
        Decimal(30),
    )
    assert (btc.symbol, btc.price_interval, btc.order_quantity) == (
        "BTC/USDT",
        Decimal(150),
        Decimal(30),
    )
    assert {eth.buy_window_size, eth.sell_window_size, btc.buy_window_size} == {5}
    markets = s.exchange.simulated.markets
    assert markets["ETH/USDT"].price == Decimal(2000)
    assert markets["ETH/USDT"].lot_size == Decimal("0.0001")
    assert markets["BTC/USDT"].price == Decimal(60000)
    assert markets["BTC/USDT"].lot_size == Decimal("0.00001")
    for market in markets.values():
        assert (market.tick_size, market.min_notional) == (Decimal("0.01"), Decimal(5))
        assert (market.feed.type, market.feed.interval) == ("random_walk", 0.2)
        assert market.feed.volatility == 0.001
    assert load_settings(REPO / "config" / "config.yaml", env={"INSTANCE_ID": "a"}).instance.id == (
        "a"
    )


def test_load_settings_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert load_settings(str(path), env={}).symbols[0].symbol == "ETH/USDT"


def test_missing_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert caught.value.problems == [f"{path}: config file not found"]


def test_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, env={})  # a directory
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{tmp_path}: cannot read config file")


def test_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("trading:\n  symbols:\n    - symbol: ETHUSDT\n   price_interval: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    [line] = caught.value.problems
    assert line.startswith(f"{path}: line 4, column 4: invalid YAML: ")


def test_instance_id_defaults_to_env_but_the_file_wins() -> None:
    assert parse(MINIMAL, env={"INSTANCE_ID": "node-2"}).instance.id == "node-2"
    assert parse(MINIMAL + "instance:\n", env={"INSTANCE_ID": "n3"}).instance.id == "n3"
    text = MINIMAL + "instance:\n  id: node-9\n"
    assert parse(text, env={"INSTANCE_ID": "node-2"}).instance.id == "node-9"


def test_bad_instance_id_from_env_is_a_problem() -> None:
    assert problems_of(MINIMAL, env={"INSTANCE_ID": "bad id!"}) == [
        "instance.id: must be 1-64 characters from A-Z a-z 0-9 _ . -"
    ]
