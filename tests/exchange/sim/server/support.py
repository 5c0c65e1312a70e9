"""The simulator server for tests: ``quantmesh sim-exchange`` in a subprocess, its test
endpoints, and ccxt clients pointed at it."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.servers.base import ServerProcess, wait_for_port
from tests.support import free_port

API_KEY = "sim-test-key"
API_SECRET = "sim-test-secret"
# More accepted keys, for tests that tell clients apart (``extra_keys=EXTRA_KEYS``).
EXTRA_KEYS: tuple[tuple[str, str], ...] = (
    ("sim-test-key-b", "sim-test-secret-b"),
    ("sim-test-key-c", "sim-test-secret-c"),
)


def binance_urls(port: int) -> dict[str, Any]:
    """ccxt ``binance`` urls for the simulator on ``port`` (REST and both WebSockets)."""
    http = f"http://127.0.0.1:{port}"
    ws = f"ws://127.0.0.1:{port}"
    return {
        "api": {
            "public": f"{http}/api/v3",
            "private": f"{http}/api/v3",
            "v1": f"{http}/api/v1",
            "ws": {"spot": f"{ws}/ws", "ws-api": {"spot": f"{ws}/ws-api/v3"}},
        }
    }


BINANCE_OPTIONS: dict[str, Any] = {
    "fetchCurrencies": False,
    "fetchMargins": False,
    "fetchMarkets": {"types": ["spot"]},
}


class SimProcess(ServerProcess):
    """``quantmesh sim-exchange`` on a free port, with its ``/_sim`` endpoints.

    ``extra_keys``: more accepted (key, secret) pairs besides ``api_key``; ``env``: added to
    the process's environment.
    """

    def __init__(
        self,
        workdir: Path,
        *args: str,
        port: int | None = None,
        api_key: str = API_KEY,
        api_secret: str = API_SECRET,
        extra_keys: Sequence[tuple[str, str]] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        extra = [arg for key, secret in extra_keys for arg in ("--extra-key", f"{key}:{secret}")]
        argv = [
            sys.executable, "-m", "quantmesh.cli", "sim-exchange", "--port", str(self.port),
            "--api-key", api_key, "--api-secret", api_secret, *extra, "--log-level", "warning",
            *args,
        ]  # fmt: skip
        super().__init__(
            argv,
            workdir,
            ready=lambda p: wait_for_port("127.0.0.1", self.port),
            env=env,
            name="sim",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def orders(self) -> list[dict[str, Any]]:
        """Every order the simulator ever accepted."""
        result: list[dict[str, Any]] = self._call("GET", "/_sim/orders")
        return result

    def actions(self) -> list[dict[str, Any]]:
        """Every order create and cancel request the simulator handled, in order, with the
        API key it came with and whether it was accepted."""
        result: list[dict[str, Any]] = self._call("GET", "/_sim/actions")
        return result

    def trades(self) -> list[dict[str, Any]]:
        """Every fill, by trade id."""
        result: list[dict[str, Any]] = self._call("GET", "/_sim/trades")
        return result

    def faults(self, **changes: float) -> dict[str, float]:
        result: dict[str, float] = self._call("POST", "/_sim/faults", changes)
        return result

    def reset_faults(self) -> None:
        self._call("POST", "/_sim/faults", {"reset": True})

    def set_price(self, symbol: str, price: float | str) -> None:
        self._call("POST", "/_sim/price", {"symbol": symbol, "price": str(price)})

    def drop_ws(self) -> int:
        result: int = self._call("POST", "/_sim/drop_ws", {})["dropped"]
        return result

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = self._call("GET", "/_sim/stats")
        return result


def duplicates(orders: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(symbol, side, price) of orders open at the same time more than once, at the end,
    and client ids accepted twice while the first was still open (the server refuses
    that, so any hit is a bug)."""
    seen: dict[tuple[str, str, str], int] = {}
    for order in orders:
        if order["status"] == "open":
            key = (order["symbol"], order["side"], order["price"])
            seen[key] = seen.get(key, 0) + 1
    return [key for key, count in seen.items() if count > 1]


def write_sim_config(directory: Path, volatility: float = 0.0, interval: float = 3600) -> Path:
    """Markets ETH/USDT (2000) and BTC/USDT (30000). By default the feeds publish their start
    price once: prices then move only when a test sets them (a feed would overwrite them)."""
    path = directory / "sim.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    feed = {"interval": interval, "volatility": volatility, "seed": 3}
    config = {
        "fee_rate": "0.001",
        "balances": {"USDT": 1_000_000, "ETH": 100, "BTC": 10},
        "markets": {
            "ETH/USDT": {"price": 2000, "tick_size": "0.01", "lot_size": "0.0001",
                         "min_notional": 5, "feed": feed},
            "BTC/USDT": {"price": 30000, "tick_size": "0.1", "lot_size": "0.00001",
                         "min_notional": 5, "feed": feed},
        },
    }  # fmt: skip
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def binance_client(port: int, **config: Any) -> Any:
    """ccxt.pro's real ``binance`` class, pointed at the simulator."""
    import ccxt.pro

    return ccxt.pro.binance(
        {
            "apiKey": API_KEY,
            "secret": API_SECRET,
            "urls": binance_urls(port),
            "options": dict(BINANCE_OPTIONS),
            "timeout": 5000,
            **config,
        }
    )


@contextmanager
def running_sim(workdir: Path, *args: str, **kw: Any) -> Iterator[SimProcess]:
    """A started simulator with the markets of ``write_sim_config``; stopped on exit."""
    process = SimProcess(workdir, "--config", str(write_sim_config(workdir)), *args, **kw)
    process.start()
    try:
        yield process
    finally:
        process.stop()
