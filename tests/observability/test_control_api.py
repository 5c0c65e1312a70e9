"""The control endpoints over a real HTTP server: the token rules, one clear error per bad
request, a request the database refused changes nothing, and the paused gauge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from quantmesh.control.board import ControlBoard
from quantmesh.control.desired import Desired
from quantmesh.observability.control_api import ControlApi, report_control
from quantmesh.observability.health import Health
from quantmesh.observability.http import HttpServer
from quantmesh.observability.metrics import Metrics
from tests.control.support import MemoryStore

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Served:
    def __init__(self, url: str, session: aiohttp.ClientSession, store: MemoryStore,
                 board: ControlBoard, metrics: Metrics) -> None:  # fmt: skip
        self.url, self.session, self.store, self.board, self.metrics = (
            url, session, store, board, metrics,
        )  # fmt: skip

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        headers = kwargs.pop("headers", AUTH)
        async with self.session.post(
            self.url + path, json=body, headers=headers, **kwargs
        ) as response:
            return response.status, await response.json()

    def paused(self, symbol: str, mode: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "quantmesh_symbol_paused", {"symbol": symbol, "mode": mode}
        )


@pytest.fixture
async def served() -> AsyncIterator[Any]:
    servers: list[HttpServer] = []
    session = aiohttp.ClientSession()

    async def start(token: str = TOKEN) -> Served:
        store, metrics = MemoryStore(), Metrics()
        board = ControlBoard(
            store, instance="node-1", refresh_interval=1.0, on_change=report_control(metrics)
        )
        await board.refresh()
        api = ControlApi(
            board,
            known_symbols=lambda: {"ETH/USDT", "BTC/USDT"},
            owned=lambda: {"ETH/USDT"},
        )
        server = HttpServer(
            "127.0.0.1",
            0,
            registry=metrics.registry,
            health=Health(),
            status=dict,
            token=token,
            routes=api.routes(),
        )
        await server.start()
        servers.append(server)
        return Served(f"http://127.0.0.1:{server.port}", session, store, board, metrics)

    yield start
    for server in servers:
        await server.close()
    await session.close()


async def test_pause_is_recorded_with_who_and_why_and_acted_on_here(served: Any) -> None:
    api = await served()
    status, body = await api.post("/api/symbols/ETH/USDT/pause", {"reason": "news", "by": "ana"})
    assert status == 200, body
    assert body["control"]["mode"] == "paused" and body["owner_here"] is True
    assert api.board.get("ETH/USDT") == api.store.controls["ETH/USDT"]
    assert (api.store.controls["ETH/USDT"].reason, api.store.controls["ETH/USDT"].actor) == (
        "news",
        "ana",
    )
    assert api.paused("ETH/USDT", "paused") == 1.0 and api.paused("ETH/USDT", "stop_buys") == 0


async def test_other_spellings_of_the_symbol_and_the_default_actor(served: Any) -> None:
    api = await served()
    status, body = await api.post("/api/symbols/btc-usdt/cancel-all")
    assert status == 200, body
    assert body["symbol"] == "BTC/USDT" and body["owner_here"] is False
    assert body["takes_effect"] == "when the owner next reads the board"
    assert api.store.controls["BTC/USDT"] == Desired(
        "paused", True, "", api.store.audit[0].desired.actor, api.store.audit[0].desired.at
    )
    assert api.store.audit[0].desired.actor.startswith("api@127.0.0.1")
    assert api.paused("BTC/USDT", "cancel_all") == 1.0
    status, _ = await api.post("/api/symbols/BTC_USDT/resume")
    assert status == 200 and api.paused("BTC/USDT", "cancel_all") == 0.0


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/api/symbols/DOGE/USDT/pause", None, 404, "DOGE/USDT is not a symbol of this fleet"),
        ("/api/symbols/ETH/USDT/halt", None, 400, "unknown action 'halt'"),
        ("/api/symbols/ETH/USDT/pause", ["no"], 400, "JSON object"),
        ("/api/symbols/ETH/USDT/pause", {"reason": "x" * 501}, 400, "at most 500"),
        ("/api/symbols/ETH/USDT/pause", {"by": 7}, 400, "by must be a string"),
    ],
)
async def test_a_bad_request_gets_one_clear_error_and_changes_nothing(
    served: Any, path: str, body: Any, status: int, says: str
) -> None:
    api = await served()
    got, answer = await api.post(path, body)
    assert got == status and says in answer["error"], answer
    assert api.store.controls == {} and api.store.audit == []


async def test_a_body_that_is_not_json_is_refused(served: Any) -> None:
    api = await served()
    async with api.session.post(
        api.url + "/api/symbols/ETH/USDT/pause", data=b"{not json", headers=AUTH
    ) as response:
        assert response.status == 400
        assert "not JSON" in (await response.json())["error"]


async def test_without_the_token_nothing_changes(served: Any) -> None:
    api = await served()
    got, answer = await api.post("/api/symbols/ETH/USDT/pause", headers={})
    assert got == 401 and "bearer token" in answer["error"]
    open_api = await served(token="")
    got, answer = await open_api.post("/api/symbols/ETH/USDT/pause", headers={})
    assert got == 403 and "http.token" in answer["error"]
    assert api.store.controls == {} and open_api.store.controls == {}


async def test_a_request_the_database_refused_is_503_and_changes_nothing(served: Any) -> None:
    api = await served()
    api.store.down = True
    got, answer = await api.post("/api/symbols/ETH/USDT/stop-buys")
    assert got == 503 and "nothing changed" in answer["error"]
    assert api.board.get("ETH/USDT") == Desired() and api.paused("ETH/USDT", "stop_buys") is None


async def test_controls_lists_every_known_symbol_and_the_audit_newest_first(served: Any) -> None:
    api = await served()
    await api.post("/api/symbols/ETH/USDT/stop-buys", {"reason": "dip"})
    await api.post("/api/symbols/ETH/USDT/resume")
    async with api.session.get(api.url + "/api/controls", headers=AUTH) as response:
        assert response.status == 200
        body = await response.json()
    assert body["symbols"]["BTC/USDT"]["mode"] == "active"
    assert body["symbols"]["ETH/USDT"]["mode"] == "active"
    assert [(e["action"], e["reason"]) for e in body["audit"]] == [
        ("resume", ""),
        ("stop-buys", "dip"),
    ]
    async with api.session.get(api.url + "/api/controls") as response:
        assert response.status == 401  # reading /api/ asks for the token when one is set
