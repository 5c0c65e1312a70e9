"""The daemon's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz`` and ``/api/status``.

``/metrics`` and ``/healthz`` never ask for credentials, so Prometheus and container
health checks work as configured; ``/api/*`` asks for the bearer token when one is set.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from quantmesh.errors import StartupError
from quantmesh.observability.health import Health

log = structlog.get_logger(__name__)

StatusFn = Callable[[], Mapping[str, Any]]


class HttpServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        health: Health,
        status: StatusFn,
        token: str = "",
    ) -> None:
        self.host = host
        self.port = port
        self._registry = registry
        self._health = health
        self._status = status
        self._token = token.encode()
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/api/status", self._api_status)
        return app

    async def start(self) -> None:
        """Listen on ``host:port``; port 0 picks a free one, stored back in ``port``."""
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"http: cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); "
                "set http.port to a free port, or http.enabled: false"
            ) from None
        self._runner = runner
        server = site._server  # aiohttp keeps the bound sockets there
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("http_listening", host=self.host, port=self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if self._token and request.path.startswith("/api/"):
            given = request.headers.get("Authorization", "")
            expected = b"Bearer " + self._token
            if not hmac.compare_digest(given.encode(), expected):
                return web.json_response(
                    {"error": "missing or wrong bearer token"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="quantmesh"'},
                )
        response: web.StreamResponse = await handler(request)
        return response

    async def _metrics(self, _: web.Request) -> web.Response:
        # The 0.0.4 text format: what every Prometheus 2.x server and promtool parse.
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        readiness = self._health.readiness()
        return web.json_response(readiness.as_json(), status=200 if readiness.ready else 503)

    async def _api_status(self, _: web.Request) -> web.Response:
        return web.json_response(dict(self._status()), dumps=_dumps)


def _dumps(value: object) -> str:
    return json.dumps(value, default=str)
