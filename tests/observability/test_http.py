"""The HTTP endpoints, served for real on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from quantmesh.control.desired import ACTIVE, Desired
from quantmesh.domain import Tick
from quantmesh.errors import StartupError
from quantmesh.grid.planner import OpenOrder
from quantmesh.grid.pnl import Position, position
from quantmesh.grid.state import GridParams, GridSpec, LevelState
from quantmesh.observability.health import Check, Health
from quantmesh.observability.http import HttpServer, exposure_warning, is_loopback
from quantmesh.observability.metrics import Metrics
from quantmesh.observability.page import content_security_policy, page_html, page_routes
from quantmesh.observability.status import (
    buffer_check,
    prices_check,
    service_status,
    traders_check,
)

NOW = 1_800_000_000.0


@dataclass
class FakeTrader:
    symbol: str
    last_tick: Tick | None = None
    price_age: float | None = None
    trading: bool = True
    inventory: Decimal = Decimal(0)
    open_order_count: int = 0
    realized_pnl: Decimal = Decimal(0)
    control: Desired | None = ACTIVE
    grid_spec: GridSpec | None = None
    orders: tuple[OpenOrder, ...] = ()
    holdings: tuple[LevelState, ...] = ()
    fees_paid: dict[str, Decimal] = field(default_factory=dict)

    @property
    def position(self) -> Position | None:
        return None if self.last_tick is None else position(self.holdings, {}, self.last_tick.price)


Serve = Callable[..., AsyncIterator[tuple[HttpServer, aiohttp.ClientSession]]]


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Any]]:
    servers: list[HttpServer] = []
    session = aiohttp.ClientSession()

    async def start(
        health: Health | None = None, status: dict[str, Any] | None = None, token: str = ""
    ) -> tuple[str, aiohttp.ClientSession, Metrics]:
        metrics = Metrics()
        server = HttpServer(
            "127.0.0.1",
            0,
            registry=metrics.registry,
            health=health or Health(),
            status=lambda: status or {},
            token=token,
        )
        await server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}", session, metrics

    yield start
    for server in servers:
        await server.close()
    await session.close()


async def test_metrics_are_prometheus_text_with_what_was_recorded(served: Any) -> None:
    url, session, metrics = await served()
    metrics.orders_placed.labels("ETH/USDT", "buy").inc(3)
    async with session.get(f"{url}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    assert 'quantmesh_orders_placed_total{side="buy",symbol="ETH/USDT"} 3.0' in text


async def test_healthz_answers_while_readiness_fails(served: Any) -> None:
    health = Health()
    health.register("lock", lambda: Check(False, "redis unreachable"))
    url, session, _ = await served(health)
    async with session.get(f"{url}/healthz") as r:
        assert r.status == 200
        assert (await r.json()) == {"status": "alive"}
    async with session.get(f"{url}/readyz") as r:
        assert r.status == 503
        body = await r.json()
    assert body["ready"] is False
    assert body["failing"] == ["lock"]
    assert body["checks"]["lock"] == {"ok": False, "detail": "redis unreachable"}


async def test_readyz_is_200_only_when_every_check_passes(served: Any) -> None:
    state = {"db": True}
    health = Health()
    health.register("database", lambda: Check(state["db"], "reachable"))
    health.register("prices", lambda: Check(True, "fresh"))
    url, session, _ = await served(health)
    async with session.get(f"{url}/readyz") as r:
        assert r.status == 200
        assert (await r.json())["failing"] == []
    state["db"] = False
    async with session.get(f"{url}/readyz") as r:
        assert r.status == 503
        assert (await r.json())["failing"] == ["database"]


async def test_a_check_that_raises_fails_readiness_instead_of_the_probe(served: Any) -> None:
    def broken() -> Check:
        raise RuntimeError("boom")

    health = Health()
    health.register("broken", broken)
    url, session, _ = await served(health)
    async with session.get(f"{url}/readyz") as r:
        assert r.status == 503
        body = await r.json()
    assert body["checks"]["broken"]["detail"] == "check failed: RuntimeError: boom"


async def test_api_needs_the_bearer_token_when_one_is_set(served: Any) -> None:
    url, session, _ = await served(status={"instance": "qm-1"}, token="s3cret-token")
    async with session.get(f"{url}/api/status") as r:
        assert r.status == 401
        assert "s3cret" not in await r.text()
    bad = {"Authorization": "Bearer wrong"}
    async with session.get(f"{url}/api/status", headers=bad) as r:
        assert r.status == 401
    good = {"Authorization": "Bearer s3cret-token"}
    async with session.get(f"{url}/api/status", headers=good) as r:
        assert r.status == 200
        assert (await r.json()) == {"instance": "qm-1"}
    for open_path in ("/metrics", "/healthz"):
        async with session.get(f"{url}{open_path}") as r:
            assert r.status == 200, open_path


async def test_api_is_open_without_a_token(served: Any) -> None:
    url, session, _ = await served(status={"instance": "qm-1"})
    async with session.get(f"{url}/api/status") as r:
        assert r.status == 200


@pytest.fixture
async def with_pause_route() -> AsyncIterator[Callable[[str], Any]]:
    """The daemon's HTTP app with one more route that changes state (as a pause endpoint
    would), served for real; ``calls`` counts the requests that reached it."""
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession()

    async def start(token: str) -> tuple[str, aiohttp.ClientSession, list[str]]:
        calls: list[str] = []

        async def pause(request: web.Request) -> web.Response:
            calls.append(request.path)
            return web.json_response({"paused": True})

        server = HttpServer(
            "127.0.0.1", 0, registry=Metrics().registry, health=Health(), status=dict, token=token
        )
        app = server.app()
        app.router.add_post("/api/pause", pause)
        app.router.add_post("/internal/pause", pause)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}", session, calls

    yield start
    for runner in runners:
        await runner.cleanup()
    await session.close()


async def test_state_changes_are_refused_without_a_configured_token(
    with_pause_route: Any,
) -> None:
    url, session, calls = await with_pause_route("")
    for method, path in [
        ("POST", "/api/pause"),
        ("POST", "/internal/pause"),
        ("POST", "/metrics"),
        ("DELETE", "/api/status"),
        ("PUT", "/healthz"),
    ]:
        async with session.request(method, f"{url}{path}") as r:
            assert r.status == 403, (method, path)
            assert "http.token" in (await r.json())["error"]
    assert calls == []
    async with session.get(f"{url}/api/status") as r:  # reading stays open without a token
        assert r.status == 200


async def test_state_changes_need_the_bearer_token(with_pause_route: Any) -> None:
    url, session, calls = await with_pause_route("s3cret-token")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        for path in ("/api/pause", "/internal/pause"):
            async with session.post(f"{url}{path}", headers=headers) as r:
                assert r.status == 401, (headers, path)
                assert "s3cret" not in await r.text()
    assert calls == []
    good = {"Authorization": "Bearer s3cret-token"}
    for path in ("/api/pause", "/internal/pause"):
        async with session.post(f"{url}{path}", headers=good) as r:
            assert r.status == 200
    assert calls == ["/api/pause", "/internal/pause"]
    async with session.get(f"{url}/metrics") as r:  # reading /metrics never asks
        assert r.status == 200


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [
        ("0.0.0.0", "", True),
        ("0.0.0.0", "tok-1", False),
        ("127.0.0.1", "", False),
        ("localhost", "", False),
    ],
)
async def test_a_warning_when_status_is_exposed_without_a_token(
    host: str, token: str, warned: bool
) -> None:
    server = HttpServer(
        host, 0, registry=Metrics().registry, health=Health(), status=dict, token=token
    )
    with capture_logs() as logs:
        await server.start()
    await server.close()
    warnings = [e for e in logs if e["log_level"] == "warning"]
    if not warned:
        assert warnings == []
        return
    (warning,) = warnings
    assert warning["event"] == "http_exposed_without_token"
    message = warning["message"]
    assert "\n" not in message
    assert "http.host is 0.0.0.0" in message and "set http.token" in message
    assert "/api/status" in message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("quantmesh.internal", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (exposure_warning(host, "") is None) is loopback
    assert exposure_warning(host, "a-token") is None


async def test_a_taken_port_is_one_clear_startup_error(served: Any) -> None:
    url, _, _ = await served()
    port = int(url.rsplit(":", 1)[1])
    second = HttpServer(
        "127.0.0.1", port, registry=Metrics().registry, health=Health(), status=dict
    )
    with pytest.raises(StartupError, match=rf"http: cannot listen on 127.0.0.1:{port} .*http.port"):
        await second.start()


def test_status_lists_each_symbol_and_component_sections() -> None:
    eth = FakeTrader(
        "ETH/USDT",
        Tick("ETH/USDT", Decimal("3000.5"), NOW - 2),
        price_age=2.0,
        inventory=Decimal("0.02"),
        open_order_count=11,
        realized_pnl=Decimal("1.25"),
        fees_paid={"USDT": Decimal("0.0600"), "BNB": Decimal("0.00002")},
        control=Desired("stop_buys", reason="dip", actor="ops@host", at=NOW - 60),
        grid_spec=GridParams("ETH/USDT", Decimal(10), Decimal(20), 5, 5).anchored_at(Decimal(3000)),
        orders=(
            OpenOrder("qm-s-1", 1, "sell", Decimal(3010), Decimal("0.01")),
            OpenOrder("qm-b-0", 0, "buy", Decimal(3000), Decimal("0.0066")),
        ),
        holdings=(LevelState(-1, Decimal("0.02"), Decimal("59.8"), 1),),
    )
    btc = FakeTrader("BTC/USDT", trading=False, control=None)
    body = service_status(
        {"instance": "qm-1", "role": "master"},
        [eth, btc],
        {"lock": lambda: {"backend": "redis", "healthy": True}},
    )
    assert body["instance"] == "qm-1"
    assert body["symbols"]["ETH/USDT"] == {
        "trading": True,
        "price": "3000.5",
        "price_age_seconds": 2.0,
        "inventory": "0.02",
        "open_orders": 11,
        "realized_pnl": "1.25",
        "fees_paid": {"BNB": "0.00002", "USDT": "0.06"},
        "cost": "59.8",
        "average_cost": "2990",
        "unrealized_pnl": "0.21",
        "control": {
            "mode": "stop_buys",
            "cancel_orders": False,
            "reason": "dip",
            "by": "ops@host",
            "at": NOW - 60,
        },
        "orders": [  # by level, lowest first
            {
                "client_order_id": "qm-b-0",
                "level": 0,
                "side": "buy",
                "price": "3000",
                "amount": "0.0066",
            },
            {
                "client_order_id": "qm-s-1",
                "level": 1,
                "side": "sell",
                "price": "3010",
                "amount": "0.01",
            },
        ],
        "levels": [{"level": -1, "price": "2990", "holding": "0.02", "cost": "59.8"}],
    }
    assert body["symbols"]["BTC/USDT"]["price"] is None
    assert body["symbols"]["BTC/USDT"]["unrealized_pnl"] is None
    assert body["symbols"]["BTC/USDT"]["orders"] == []
    assert body["symbols"]["BTC/USDT"]["levels"] == []
    assert body["symbols"]["BTC/USDT"]["control"]["mode"] == "unknown"
    assert body["lock"] == {"backend": "redis", "healthy": True}


def test_traders_check_names_failed_and_idle_symbols() -> None:
    traders = [FakeTrader("ETH/USDT"), FakeTrader("BTC/USDT", trading=False), FakeTrader("X/Y")]
    check = traders_check(traders, {"X/Y": "market not found"})
    assert not check.ok
    assert check.detail == "X/Y failed (market not found); BTC/USDT not trading"
    assert traders_check(traders[:1], {}).ok
    assert traders_check([], {}) == Check(True, "owns no symbol now: standing by")
    assert not traders_check([], {"X/Y": "market not found"}).ok


def test_prices_check_fails_on_missing_or_old_prices() -> None:
    fresh = FakeTrader("ETH/USDT", Tick("ETH/USDT", Decimal(1), NOW - 5), price_age=5.0)
    old = FakeTrader("BTC/USDT", Tick("BTC/USDT", Decimal(1), NOW - 45), price_age=45.0)
    none = FakeTrader("SOL/USDT")
    assert prices_check([fresh], 30).ok
    check = prices_check([fresh, old, none], 30)
    assert not check.ok
    assert check.detail == "prices older than 30 s: BTC/USDT (45 s old), SOL/USDT (no price yet)"


def test_buffer_check_is_ready_within_the_memory_bound_only() -> None:
    assert buffer_check(0, 0, 100) == Check(True, "no writes waiting")
    within = buffer_check(40, 40, 100)
    assert within.ok
    assert within.detail == "database unreachable; 40 writes buffered of 100"
    beyond = buffer_check(130, 100, 100)
    assert not beyond.ok
    assert "130 writes waiting, 30 of them beyond the memory buffer (100)" in beyond.detail


def test_buffer_check_fails_while_writes_are_held_in_memory_only() -> None:
    check = buffer_check(5, 5, 100, volatile=2)
    assert not check.ok
    assert check.detail.startswith("2 writes held in memory only")


async def test_the_page_needs_no_token_and_runs_only_its_own_inline_code() -> None:
    server = HttpServer(
        "127.0.0.1",
        0,
        registry=Metrics().registry,
        health=Health(),
        status=lambda: {"instance": "qm-1"},
        token="s3cret-token",
        routes=page_routes(),
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{server.port}/") as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "text/html; charset=utf-8"
                policy = r.headers["Content-Security-Policy"]
                assert r.headers["Cache-Control"] == "no-store"
                html = await r.text()
            async with session.get(f"http://127.0.0.1:{server.port}/api/status") as r:
                assert r.status == 401  # the data behind the page still asks
    finally:
        await server.close()
    assert html.encode() == page_html()
    assert "/api/status" in html and "sessionStorage" in html
    assert "s3cret" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    assert "https://" not in html
    assert policy == content_security_policy(html.encode())
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert policy.count("'sha256-") == 2  # the one <style> and the one <script>
    assert "unsafe-inline" not in policy
