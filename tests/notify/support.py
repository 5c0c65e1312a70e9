"""Local HTTP receivers standing in for a webhook endpoint, Telegram, Slack and Discord,
and a notifier that records what it is given."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from prometheus_client import CollectorRegistry

from quantmesh.config.notifications import ChannelSettings
from quantmesh.notify.build import notifications_counter
from quantmesh.notify.channels import build_channel
from quantmesh.notify.events import Event
from quantmesh.notify.queue import ChannelQueue
from tests.support import free_port


@dataclass(frozen=True)
class Reply:
    """What the receiver answers to one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"


@dataclass(frozen=True)
class Request:
    """One request the receiver got, and when (monotonic seconds)."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """An HTTP server on 127.0.0.1 answering POSTs with the ``replies`` queued (then 200);
    ``stop`` and ``start`` again on the same port make a receiver that is down a while."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.replies: deque[Reply] = deque()
        self.requests: list[Request] = []
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def delivered(self) -> list[Request]:
        """The requests answered with a 2xx."""
        return [r for r in self.requests if 200 <= r.status < 300]

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        reply = self.replies.popleft() if self.replies else Reply()
        self.requests.append(
            Request(request.path, dict(request.headers), body, time.monotonic(), reply.status)
        )
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(status=reply.status, headers=reply.headers, text=reply.body)

    async def wait_delivered(self, count: int, timeout: float = 10.0) -> list[Request]:
        """Wait until ``count`` requests were answered with a 2xx; fails after ``timeout``."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.delivered) >= count)
        return self.delivered


class Recorder:
    """A ``Notifier`` that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def channel_settings(**values: Any) -> ChannelSettings:
    return ChannelSettings.model_validate(values)


def sample(registry: CollectorRegistry, channel: str, outcome: str) -> float:
    value = registry.get_sample_value(
        "quantmesh_notifications_total", {"channel": channel, "outcome": outcome}
    )
    return 0.0 if value is None else value


def make_queue(
    settings: ChannelSettings,
    registry: CollectorRegistry,
    *,
    size: int = 100,
    retry_for: float = 60.0,
    first_retry: float = 0.05,
    instance: str = "node-a",
) -> ChannelQueue:
    channel = build_channel(settings, settings.name or settings.type, instance)
    counter = notifications_counter(registry)
    return ChannelQueue(
        channel, size=size, counter=counter, retry_for=retry_for, first_retry=first_retry
    )


async def counted(
    registry: CollectorRegistry, channel: str, outcome: str, count: float, timeout: float = 10.0
) -> None:
    """Wait until ``count`` messages of ``channel`` were counted with ``outcome``."""
    deadline = time.monotonic() + timeout
    while sample(registry, channel, outcome) < count:
        if time.monotonic() > deadline:
            got = sample(registry, channel, outcome)
            raise AssertionError(f"{channel} {outcome}: {got}, not {count}, in {timeout} s")
        await asyncio.sleep(0.02)


class ThreadedReceiver:
    """A receiver on a thread of its own, for tests that drive ``quantmesh`` processes
    synchronously: records every POST (path, headers, body) and answers 200."""

    def __init__(self) -> None:
        received: list[Request] = []
        self.received = received
        self._lock = threading.Lock()
        lock = self._lock

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with lock:
                    received.append(
                        Request(self.path, dict(self.headers), body, time.monotonic(), 200)
                    )
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, event: str | None = None) -> list[dict[str, Any]]:
        """The JSON bodies received (of ``event`` only, when given)."""
        with self._lock:
            bodies = [json.loads(r.body) for r in self.received]
        return [b for b in bodies if event is None or b.get("event") == event]

    def wait_for(self, event: str, count: int, timeout: float) -> list[dict[str, Any]]:
        """The bodies of ``event`` once ``count`` arrived; what arrived after ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(found := self.bodies(event)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
