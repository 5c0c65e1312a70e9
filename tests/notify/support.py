"""Local HTTP receivers standing in for a webhook endpoint, Telegram, Slack and Discord,
and a notifier that records what it is given."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from quantmesh.config.schema import ChannelSettings
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
