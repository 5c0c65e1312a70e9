"""The live page for people: ``GET /`` serves one HTML file (``static/index.html``).

The file holds no data: its inline script polls ``/api/status`` every 2 s with the bearer
token the person types in once (kept in the tab's ``sessionStorage``, never in a URL) and
posts the control actions to ``/api/symbols/{base}/{quote}/{action}``. So ``/`` needs no
token, and the HTTP server's middleware keeps guarding ``/api/*`` as for any client.

Nothing is fetched from elsewhere (air-gapped hosts): CSS and script are inline, and the
Content-Security-Policy allows exactly those two blocks (by hash) and requests to this
server.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from aiohttp import web

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)
_NONE = "'none'"


def page_html() -> bytes:
    """The page as shipped (package data of ``quantmesh.observability``)."""
    return resources.files(__package__).joinpath("static", "index.html").read_bytes()


def content_security_policy(html: bytes) -> str:
    """A policy allowing the page's own inline blocks (by their SHA-256) and requests to
    the server that served it; nothing else, so text from the API can never run."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {' '.join(hashes[b'script']) or _NONE}",
            f"style-src {' '.join(hashes[b'style']) or _NONE}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def page_routes() -> list[web.RouteDef]:
    """``GET /`` (and ``HEAD``): the page, read once here."""
    html = page_html()
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    async def index(_: web.Request) -> web.Response:
        return web.Response(body=html, content_type="text/html", charset="utf-8", headers=headers)

    return [web.get("/", index)]
