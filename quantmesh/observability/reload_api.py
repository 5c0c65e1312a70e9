"""The reload endpoint: ``POST /api/reload`` reads the settings file again and applies it.

Answers ``200`` with the changes, one line each (``{"at", "ok": true, "changes"}``), or
``422`` with the file's problems when it is invalid (``"ok": false, "problems"``: the
lines of ``quantmesh check-config``), nothing changed. Behind the HTTP server's
middleware: it changes state, so it needs ``http.token``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from quantmesh.control.reload import ReloadReport


class ReloadApi:
    """The handler, over the service's reload."""

    def __init__(self, reload: Callable[[], Awaitable[ReloadReport]]) -> None:
        self._reload = reload

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/reload", self.reload)]

    async def reload(self, _: web.Request) -> web.Response:
        report = await self._reload()
        return web.json_response(report.as_json(), status=200 if report.ok else 422)
