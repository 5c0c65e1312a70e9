"""``quantmesh export`` and ``status --json`` against each of the three databases: rows written
by the repository come out as CSV and JSON with ISO 8601 UTC times and exact decimals,
filtered by symbol and time; another exchange's rows stay out; an empty database or a bad
``--since`` is one line and a non-zero exit, and ``-o`` leaves no half-written file."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from quantmesh.domain import Fill, Order
from quantmesh.grid.state import RoundTrip
from tests.cli.support import run_cli

from .conftest import Backend, RepoFactory

D = Decimal
DAY1 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY2 = DAY1 + 86_400


def _config(tmp_path: Path, backend: Backend) -> Path:
    dsn = backend.url.replace("+asyncpg", "").replace("+aiomysql", "")
    settings: dict[str, Any] = {
        "exchange": {"name": "simulated"},
        "trading": {"symbols": [{"symbol": "ETH/USDT", "price_interval": 5}]},
        "database": {"type": backend.db_type, "dsn": dsn},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _fill(trade_id: str, side: str, price: str, ts: float, fee_currency: str = "USDT") -> Fill:
    fee = D("0.02") if fee_currency == "USDT" else D("0.00001")
    return Fill(trade_id, "ETH/USDT", side, D(price), D("0.01"), fee, fee_currency,  # type: ignore[arg-type]
                f"qm.1.{side[0].upper()}-1.0", f"x{trade_id}", ts)  # fmt: skip


async def _fill_database(make_repo: RepoFactory) -> None:
    repo = await make_repo("simulated")
    other = await make_repo("binance")  # another exchange in the same database
    bought = Order("ETH/USDT", "buy", D("2000"), D("0.01"), "qm.1.B-1.0", "x1", "filled",
                   D("0.01"), DAY1 + 10, DAY1 + 11)  # fmt: skip
    await repo.save_order(bought)
    await repo.save_fills(
        [
            _fill("1", "buy", "2000", DAY1 + 11),
            _fill("2", "sell", "2010.5", DAY1 + 3600, fee_currency="BNB"),
            _fill("3", "buy", "1990", DAY2 + 60),
        ]
    )
    await repo.save_round_trip(
        RoundTrip("ETH/USDT", -1, 1, D("0.01"), D("20.02"), D("20.105"), D("0.085"), DAY1 + 3600)
    )
    await other.save_fills([_fill("9", "buy", "2000", DAY1 + 5)])


def _leftovers(directory: Path, prefix: str) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(prefix)]


def _export(tmp_path: Path, config: Path, *args: str) -> str:
    result = run_cli(["export", *args, "-c", str(config)], tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_export_reads_what_the_repository_wrote(
    make_repo: RepoFactory, backend: Backend, tmp_path: Path
) -> None:
    await _fill_database(make_repo)
    config = _config(tmp_path, backend)

    rows = list(csv.DictReader(io.StringIO(_export(tmp_path, config, "trades"))))
    assert [r["trade_id"] for r in rows] == ["1", "2", "3"]  # oldest first, binance's left out
    first = rows[0]
    assert first["time"] == "2026-01-01T00:00:11.000Z"
    assert (first["side"], first["price"], first["amount"]) == ("buy", "2000", "0.01")
    assert (first["quote_amount"], first["fee"], first["fee_currency"]) == ("20", "0.02", "USDT")
    assert (first["order_id"], first["client_order_id"]) == ("x1", "qm.1.B-1.0")

    since = _export(
        tmp_path, config, "trades", "--since", "2026-01-01T01:00", "--until", "2026-01-02"
    )
    assert [r["trade_id"] for r in csv.DictReader(io.StringIO(since))] == ["2"]
    everyone = _export(tmp_path, config, "trades", "--exchange", "all", "--format", "json")
    assert sorted(r["trade_id"] for r in json.loads(everyone)) == ["1", "2", "3", "9"]

    trips = json.loads(_export(tmp_path, config, "round-trips", "--format", "json"))
    assert trips == [
        {"closed_at": "2026-01-01T01:00:00.000Z", "exchange": "simulated", "symbol": "ETH/USDT",
         "level": -1, "cycle": 1, "amount": "0.01", "buy_cost": "20.02",
         "sell_proceeds": "20.105", "pnl": "0.085"}
    ]  # fmt: skip
    orders = list(csv.DictReader(io.StringIO(_export(tmp_path, config, "orders"))))
    assert [(o["client_order_id"], o["status"], o["filled"]) for o in orders] == [
        ("qm.1.B-1.0", "filled", "0.01")
    ]

    daily = list(
        csv.DictReader(io.StringIO(_export(tmp_path, config, "daily", "--symbol", "ethusdt")))
    )
    assert [(d["date"], d["buys"], d["sells"], d["round_trips"]) for d in daily] == [
        ("2026-01-01", "1", "1", "1"),
        ("2026-01-02", "1", "0", "0"),
    ]
    assert (daily[0]["realized_pnl"], daily[0]["fees_quote"], daily[0]["fees_other"]) == (
        "0.085", "0.02", "BNB 0.00001",
    )  # fmt: skip

    out = tmp_path / "trades.csv"
    assert _export(tmp_path, config, "trades", "-o", str(out)) == ""
    assert out.read_text().splitlines()[0].startswith("time,exchange,symbol,side,price")
    assert _leftovers(tmp_path, ".trades.csv.") == []

    status = run_cli(["status", "--json", "-c", str(config)], tmp_path, timeout=60)
    assert status.returncode == 0, status.stderr
    grids = json.loads(status.stdout)["grids"]
    assert grids == []  # trades alone make no grid: nothing to report yet


async def test_status_json_lists_each_grid(
    make_repo: RepoFactory, backend: Backend, tmp_path: Path
) -> None:
    repo = await make_repo("simulated")
    await repo.init_grid("ETH/USDT", D("2000"))
    await repo.save_round_trip(
        RoundTrip("ETH/USDT", -1, 1, D("0.01"), D("20.02"), D("20.105"), D("0.085"), DAY1)
    )
    result = run_cli(
        ["status", "--json", "-c", str(_config(tmp_path, backend))], tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    (grid,) = json.loads(result.stdout)["grids"]
    assert grid["symbol"] == "ETH/USDT" and grid["exchange"] == "simulated"
    assert (grid["round_trips"], grid["realized_pnl"], grid["open_orders"]) == (1, "0.085", 0)
    assert grid["last_price"] is None


async def test_bad_input_is_one_line_and_nothing_written(
    make_repo: RepoFactory, backend: Backend, tmp_path: Path
) -> None:
    config = _config(tmp_path, backend)
    out = tmp_path / "x.csv"
    bad = run_cli(
        ["export", "trades", "--since", "yesterday", "-o", str(out), "-c", str(config)], tmp_path
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "--since: 'yesterday' is not an ISO 8601 date or time (e.g. 2026-01-31 or 2026-01-31T08:00)"
    ]
    backwards = run_cli(
        ["export", "trades", "--since", "2026-02-01", "--until", "2026-01-01", "-c", str(config)],
        tmp_path,
    )
    assert backwards.returncode == 2 and "--until: must be later than --since" in backwards.stderr
    if backend.db_type != "sqlite":  # an empty server database: no tables yet
        empty = run_cli(
            ["export", "orders", "-o", str(out), "-c", str(config)], tmp_path, timeout=60
        )
        assert empty.returncode == 1, empty
        assert "holds no QuantMesh data yet" in empty.stderr and "Traceback" not in empty.stderr
    assert not out.exists()
    await make_repo("simulated")  # the schema now exists: an empty export is a header only
    header = run_cli(["export", "orders", "-c", str(config)], tmp_path, timeout=60)
    assert header.returncode == 0 and header.stdout.startswith("created_at,updated_at,exchange")
