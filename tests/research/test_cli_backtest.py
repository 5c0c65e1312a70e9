"""``quantmesh backtest``: reports written, byte-identical on a second run, and bad input
refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantmesh.cli.main import main
from quantmesh.research.synthetic import random_walk_candles
from tests.research.support import CONFIG, store, store_trades, trades_along

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "config.yaml").write_text(CONFIG)
    store(tmp_path / "data", "ETH/USDT", random_walk_candles(6000, seed=4))
    return tmp_path


def _run(workdir: Path, *extra: str) -> int:
    return main(
        ["backtest", "-c", str(workdir / "config.yaml"), "--data", str(workdir / "data"),
         "--out", str(workdir / "out"), *extra]
    )  # fmt: skip


def test_reports_are_written_and_identical_run_after_run(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(workdir) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:3] == ["SYMBOL", "ROUND", "TRIPS"]
    names = ("report.json", "report.html", "equity.png")
    first = {name: (workdir / "out" / name).read_bytes() for name in names}
    report = json.loads(first["report.json"])
    [eth] = report["symbols"]
    assert eth["symbol"] == "ETH/USDT" and eth["round_trips"] > 10
    assert eth["round_trips"] == len(eth["round_trip_list"])
    assert eth["grid"]["tick_size"] == "0.01" and eth["grid"]["fee_rate"] == "0.001"
    assert first["equity.png"].startswith(b"\x89PNG\r\n\x1a\n")
    html = first["report.html"].decode()
    assert "<svg" in html and "http" not in html.replace("http://www.w3.org", "")
    assert _run(workdir) == 0
    assert {name: (workdir / "out" / name).read_bytes() for name in names} == first


def test_period_and_path_model_change_the_run(workdir: Path) -> None:
    assert _run(workdir, "--from", "2025-01-02", "--until", "2025-01-03") == 0
    report = json.loads((workdir / "out" / "report.json").read_text())
    assert report["from"] == "2025-01-02" and report["symbols"][0]["candles"] == 1440
    assert _run(workdir, "--path", "pessimistic") == 0
    assert json.loads((workdir / "out" / "report.json").read_text())["path_model"] == "pessimistic"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--from", "soon"], "--from 'soon' is not a date"),
        (["--from", "2025-02-01", "--until", "2025-01-01"], "must be after --from"),
        (["--timeframe", "7m"], "timeframe '7m' is not supported"),
        (["--exchange", "kraken"], "no 1m candles from kraken"),
        (["--fee-rate", "abc"], "--fee-rate 'abc'"),
        (["--from", "2030-01-01"], "no candles in"),
        (["--sweep", "price_interval"], "expected NAME=FROM:TO:COUNT"),
        (["--sweep", "colour=1,2"], "'colour' cannot be swept"),
        (["--sweep", "buy_window_size=2.5"], "takes whole numbers"),
        (["--sweep", "price_interval=1%:2%:1"], "COUNT must be at least 2"),
        (["--sweep", "order_quantity=50,1"], "must be at least min_order_value"),
        (["--source", "trades"], "no trades from binance"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert _run(workdir, *extra) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (workdir / "out").exists()


def test_sweep_runs_every_combination_ranked(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(
        workdir, "--sweep", "price_interval=0.2%:0.4%:2", "buy_window_size=3,6",
        "--jobs", "2", "--rank-by", "total_pnl",
    )  # fmt: skip
    assert code == 0
    ranking = json.loads((workdir / "out" / "sweep.json").read_text())
    runs = ranking["runs"]
    assert len(runs) == 4 and ranking["rank_by"] == "total_pnl"
    pnls = [float(run["total_pnl"]) for run in runs]
    assert pnls == sorted(pnls, reverse=True)
    for run in runs:  # each combination's own report agrees with its ranking row
        report = json.loads((Path(run["out"]) / "report.json").read_text())
        assert report["total"]["total_pnl"] == run["total_pnl"]
        interval = report["symbols"][0]["grid"]["interval"]
        assert interval in ("4", "8")  # 0.2 % and 0.4 % of the first price, near 2000
    assert {run["settings"] for run in runs} == {
        f"price_interval={p} buy_window_size={w}" for p in ("0.2%", "0.4%") for w in (3, 6)
    }
    assert "RANK" in capsys.readouterr().out


def test_an_output_that_cannot_be_written_is_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "out").write_text("a file where the report directory should be")
    assert _run(workdir) == 1
    err = capsys.readouterr().err
    assert err.startswith("quantmesh: error: ") and "out" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_trades_are_used_when_stored_and_give_every_report(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_trades(workdir / "data", "ETH/USDT", trades_along(random_walk_candles(6000, seed=4)))
    names = ("report.json", "report.html", "equity.png")
    assert _run(workdir) == 0
    first = {name: (workdir / "out" / name).read_bytes() for name in names}
    [eth] = json.loads(first["report.json"])["symbols"]
    assert (eth["grid"]["source"], eth["grid"]["fill"]) == ("trades", "touch")  # simulated's
    assert eth["candles"] == 24_000 and eth["round_trips"] > 10
    assert first["equity.png"].startswith(b"\x89PNG\r\n\x1a\n")
    html = first["report.html"].decode()
    assert "trade prints in order" in html and "24,000 trade prints, fill touch" in html
    assert _run(workdir) == 0
    assert {name: (workdir / "out" / name).read_bytes() for name in names} == first

    assert _run(workdir, "--fill", "through") == 0
    [through] = json.loads((workdir / "out" / "report.json").read_text())["symbols"]
    assert through["grid"]["fill"] == "through" and through["fills"] <= eth["fills"]
    assert _run(workdir, "--source", "candles") == 0
    [candles] = json.loads((workdir / "out" / "report.json").read_text())["symbols"]
    assert (candles["grid"]["source"], candles["candles"]) == ("candles", 6000)
    assert _run(workdir, "--sweep", "buy_window_size=3,6", "--jobs", "1") == 0
    runs = json.loads((workdir / "out" / "sweep.json").read_text())["runs"]
    for run in runs:
        report = json.loads((Path(run["out"]) / "report.json").read_text())
        assert report["symbols"][0]["grid"]["source"] == "trades"
    assert "RANK" in capsys.readouterr().out
