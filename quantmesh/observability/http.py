"""The daemon's HTTP server: ``/metrics``, ``/healthz``, ``/readyz``, ``/api/status``.

It also serves the routes the service hands it (the control endpoints, ``control_api``).
Who may do what is decided in one middleware for every route, present and future:

- reading (GET, HEAD): ``/metrics``, ``/healthz`` and ``/readyz`` never ask for
  credentials, so Prometheus and container health checks work as configured; ``/api/*``
  asks for the bearer token (``http.token``) when one is set;
- anything else (POST, PUT, DELETE, ...: whatever changes state, such as a pause or a
  resume) always needs the bearer token, and with no token configured it is refused
  (403) with a message naming ``http.token``.

Listening beyond loopback without a token exposes ``/api/status`` (positions, PnL) to
anyone who can reach the port: ``start`` logs one warning saying so (``exposure_warning``).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from quantmesh.errors import StartupError
from quantmesh.observability.health import Health

log = structlog.get_logger(__name__)

StatusFn = Callable[[], Mapping[str, Any]]

# Methods that only read; every other one needs the token.
READ_METHODS = frozenset({"GET", "HEAD"})
_NO_TOKEN = (
    "this endpoint changes state and needs a bearer token: set http.token in the "
    "configuration and send 'Authorization: Bearer <token>'"
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an ``http.host`` value) listens on this machine only: a loopback
    address or ``localhost``. ``0.0.0.0``, ``::``, an empty host and other names are not."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: str) -> str | None:
    """The one-line warning for ``http.host`` off loopback with no ``http.token``; None
    when the settings are safe."""
    if token or is_loopback(host):
        return None
    return (
        f"http.host is {host or '(all addresses)'}, not loopback, and http.token is not set: "
        "/api/status shows positions and PnL to anyone who can reach the port; "
        "set http.token (clients send 'Authorization: Bearer <token>') or http.host: 127.0.0.1"
    )


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
        routes: Sequence[web.RouteDef] = (),
    ) -> None:
        self.host = host
        self.port = port
        self._registry = registry
        self._health = health
        self._status = status
        self._token = token.encode()
        self._routes = list(routes)  # the service's own (control); the middleware guards them
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_routes(self._routes)
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
        warning = exposure_warning(self.host, self._token.decode())
        if warning is not None:
            log.warning("http_exposed_without_token", message=warning)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        changes_state = request.method not in READ_METHODS
        if changes_state and not self._token:
            return web.json_response({"error": _NO_TOKEN}, status=403)
        if changes_state or (self._token and request.path.startswith("/api/")):
            given = request.headers.get("Authorization", "")
            expected = b"Bearer " + self._token
            if not hmac.compare_digest(given.encode(errors="replace"), expected):
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
