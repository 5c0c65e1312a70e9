"""``data download`` against the simulator's klines: pages, a 429 in the middle, resuming,
the stored candles equal to the exchange's; and the spans arithmetic behind resuming."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quantmesh.cli.main import main
from quantmesh.research.download import Job, download, merge_spans, missing_spans
from quantmesh.research.history import history_path, read_candles, read_meta
from tests.exchange.sim.server.support import BINANCE_OPTIONS, SimProcess, binance_urls, running_sim

pytestmark = pytest.mark.timeout(90)
MINUTE = 60_000


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with running_sim(tmp_path_factory.mktemp("sim"), "--seed", "9") as process:
        yield process


def _client(sim: SimProcess) -> Any:
    import ccxt

    client = ccxt.binance(
        {"urls": binance_urls(sim.port), "options": dict(BINANCE_OPTIONS), "enableRateLimit": True}
    )
    client.load_markets()
    return client


def _klines(sim: SimProcess, start: int, limit: int) -> list[list[Any]]:
    url = f"{sim.url}/api/v3/klines?symbol=ETHUSDT&interval=1m&startTime={start}&limit={limit}"
    with urllib.request.urlopen(url, timeout=10) as response:
        rows: list[list[Any]] = json.loads(response.read())
    return rows


def _window(sim: SimProcess, minutes: int) -> tuple[int, int]:
    """The last ``minutes`` whole minutes of the seeded past (fixed, unlike live ones)."""
    with urllib.request.urlopen(f"{sim.url}/api/v3/time", timeout=10) as response:
        now = json.loads(response.read())["serverTime"]
    end = (now // MINUTE - 5) * MINUTE  # well inside the seeded history
    return end - minutes * MINUTE, end


def test_pages_a_429_in_the_middle_and_resume(sim: SimProcess, tmp_path: Path) -> None:
    client = _client(sim)
    since, until = _window(sim, 2500)
    waits: list[float] = []
    sim._call("POST", "/_sim/rate_limit", {"after": 1, "count": 1})  # page 2 answered 429
    job = Job("binance", "ETH/USDT", "1m", since, until - 600 * MINUTE)
    first = download(client, job, tmp_path, sleep=waits.append)
    assert (first.fetched, first.retries, first.gaps) == (1900, 1, [])
    assert first.requests == 3  # a page of 1000, the 429, then the page of 900 again
    assert waits == [1.0]  # the simulator's Retry-After
    path = history_path(tmp_path, "binance", "ETH/USDT", "1m")
    meta = read_meta(path)
    assert meta["market"]["tick_size"] == "0.01" and meta["covered"] == [[since, job.until_ms]]

    again = download(client, job, tmp_path, sleep=waits.append)
    assert (again.fetched, again.requests) == (0, 0)  # nothing missing: nothing asked
    longer = Job("binance", "ETH/USDT", "1m", since - 100 * MINUTE, until)
    resumed = download(client, longer, tmp_path, sleep=waits.append)
    assert resumed.fetched == 700 and resumed.requests == 2  # only both ends
    stored = read_candles(path)
    assert stored.ts == list(range(since - 100 * MINUTE, until, MINUTE))
    exchange = _klines(sim, since - 100 * MINUTE, 1000) + _klines(sim, since + 900 * MINUTE, 1000)
    exchange += _klines(sim, since + 1900 * MINUTE, 600)
    assert stored.close == [float(row[4]) for row in exchange]


def test_checkpoints_keep_what_was_fetched(sim: SimProcess, tmp_path: Path) -> None:
    client = _client(sim)
    since, until = _window(sim, 2100)
    sim._call("POST", "/_sim/rate_limit", {"after": 1, "count": 50})  # page 2 never comes
    job = Job("binance", "ETH/USDT", "1m", since, until)
    from quantmesh.research.errors import FetchFailed

    with pytest.raises(FetchFailed, match="what was fetched is saved"):
        download(client, job, tmp_path, sleep=lambda _: None, checkpoint=1)
    sim._call("POST", "/_sim/rate_limit", {"after": 0, "count": 0})
    path = history_path(tmp_path, "binance", "ETH/USDT", "1m")
    assert len(read_candles(path)) == 1000
    report = download(client, job, tmp_path, sleep=lambda _: None)
    assert report.fetched == 1100 and report.requests == 2


def test_cli_download_and_list(
    sim: SimProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = json.dumps(binance_urls(sim.port))
    options = json.dumps(BINANCE_OPTIONS)
    since, _ = _window(sim, 1200)
    from datetime import UTC, datetime

    day = datetime.fromtimestamp(since / 1000, UTC).strftime("%Y-%m-%dT%H:%M")
    argv = ["data", "download", "--exchange", "binance", "--symbol", "ETH/USDT", "--symbol",
            "BTCUSDT", "--since", day, "--data-dir", str(tmp_path), "--urls", urls,
            "--options", options]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ETH/USDT: " in out and "BTC/USDT: " in out and "new candles" in out
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:3] == ["EXCHANGE", "SYMBOL", "TIMEFRAME"]
    assert {line.split()[1] for line in listing[1:]} == {"ETH/USDT", "BTC/USDT"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--exchange", "nowhere", "--symbol", "ETH/USDT", "--since", "2025-01-01"],
         "'nowhere' is not a ccxt exchange id"),
        (["--exchange", "binance", "--symbol", "ETH/USDT", "--since", "someday"],
         "--since 'someday' is not a date"),
        (["--exchange", "binance", "--symbol", "ETH/USDT", "--since", "2025-01-01",
          "--timeframe", "2m"], "timeframe '2m' is not supported"),
    ],
)  # fmt: skip
def test_cli_bad_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["data", "download", *argv, "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_spans() -> None:
    assert merge_spans([(5, 7), (0, 2), (2, 4)]) == [(0, 4), (5, 7)]
    assert missing_spans((0, 10), [(2, 4), (6, 8)]) == [(0, 2), (4, 6), (8, 10)]
    assert missing_spans((0, 10), [(0, 10)]) == []
    assert missing_spans((3, 5), []) == [(3, 5)]


def _agg_trades(sim: SimProcess, start: int, end: int) -> list[dict[str, Any]]:
    """The simulator's aggTrades of ``[start, end)``, an hour a request."""
    found: list[dict[str, Any]] = []
    for hour in range(start, end, 3_600_000):
        last = min(hour + 3_600_000, end) - 1
        url = (
            f"{sim.url}/api/v3/aggTrades?symbol=ETHUSDT&startTime={hour}&endTime={last}&limit=1000"
        )
        with urllib.request.urlopen(url, timeout=10) as response:
            found += json.loads(response.read())
    return found


def test_trades_page_through_a_429_and_resume(sim: SimProcess, tmp_path: Path) -> None:
    from quantmesh.research.download import download_trades
    from quantmesh.research.history import read_trades, trades_path

    client = _client(sim)
    since, until = _window(sim, 300)  # 4 prints a minute: 240 an hour
    waits: list[float] = []
    sim._call("POST", "/_sim/rate_limit", {"after": 1, "count": 1})  # request 2 answered 429
    job = Job("binance", "ETH/USDT", "trades", since, until - 60 * MINUTE)
    first = download_trades(client, job, tmp_path, sleep=waits.append, page=100)
    assert (first.fetched, first.retries, waits) == (960, 1, [1.0])
    # Pages of 100, each from the millisecond of the last one's final print (that print
    # comes twice and is kept once): 10 for 960 prints, plus the 429.
    assert first.requests == 10 + 1
    path = trades_path(tmp_path, "binance", "ETH/USDT")
    assert read_meta(path)["covered"] == [[since, job.until_ms]]

    again = download_trades(client, job, tmp_path, sleep=waits.append, page=100)
    assert (again.fetched, again.requests) == (0, 0)  # nothing missing: nothing asked
    longer = Job("binance", "ETH/USDT", "trades", since - 30 * MINUTE, until)
    resumed = download_trades(client, longer, tmp_path, sleep=waits.append)
    assert (resumed.fetched, resumed.requests, resumed.rows) == (360, 2, 1320)
    stored = read_trades(path)
    exchange = _agg_trades(sim, since - 30 * MINUTE, until)
    assert stored.id == [str(t["a"]) for t in exchange]
    assert stored.ts == [t["T"] for t in exchange]
    assert stored.price == [float(t["p"]) for t in exchange]
    assert stored.side == ["sell" if t["m"] else "buy" for t in exchange]


def test_cli_downloads_trades_beside_the_candles_and_lists_them(
    sim: SimProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    since, until = _window(sim, 90)
    from datetime import UTC, datetime

    def day(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M")

    argv = ["data", "download", "--exchange", "binance", "--symbol", "ETH/USDT", "--trades",
            "--since", day(since), "--until", day(until), "--data-dir", str(tmp_path),
            "--urls", json.dumps(binance_urls(sim.port)),
            "--options", json.dumps(BINANCE_OPTIONS)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ETH/USDT: 90 new candles" in out and "ETH/USDT: 360 new trades" in out
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[1], r[2], r[3], r[-2]) for r in rows] == [
        ("ETH/USDT", "1m", "90", "0"),
        ("ETH/USDT", "trades", "360", "-"),
    ]


def test_trades_checkpoints_keep_what_was_fetched(sim: SimProcess, tmp_path: Path) -> None:
    from quantmesh.research.errors import FetchFailed
    from quantmesh.research.history import read_trades, trades_path

    client = _client(sim)
    since, until = _window(sim, 180)
    sim._call("POST", "/_sim/rate_limit", {"after": 1, "count": 50})  # hour 2 never comes
    job = Job("binance", "ETH/USDT", "trades", since, until)
    with pytest.raises(FetchFailed, match="what was fetched is saved"):
        download(client, job, tmp_path, sleep=lambda _: None, checkpoint=1)
    sim._call("POST", "/_sim/rate_limit", {"after": 0, "count": 0})
    path = trades_path(tmp_path, "binance", "ETH/USDT")
    assert len(read_trades(path)) == 240 and read_meta(path)["covered"] == [
        [since, since + 60 * MINUTE]
    ]
    report = download(client, job, tmp_path, sleep=lambda _: None)
    assert (report.fetched, report.requests, report.rows) == (480, 2, 720)
