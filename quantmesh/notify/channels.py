"""The channels: how one message reaches one receiver over HTTP (aiohttp).

A ``Channel`` sends one event per ``send`` call and says how it went by raising
``DeliveryFailed``: ``retry`` when a later attempt may succeed (no connection, a timeout,
HTTP 5xx, 429 with the ``Retry-After`` the receiver asked for), not when the request
itself is wrong (other 4xx: a bad token, a deleted webhook). The queue (``queue``)
decides about retries.

Error texts never hold a URL, a token or a secret: they are built from the status and
the exception's type, and ``redact`` runs over whatever the receiver answered.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol
from urllib.parse import urlsplit

import aiohttp

from quantmesh.config.notifications import ChannelSettings
from quantmesh.notify.events import Event, Json
from quantmesh.notify.formats import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    discord_payload,
    signature,
    slack_payload,
    telegram_payload,
    webhook_body,
)
from quantmesh.secrets import redact

USER_AGENT: Final = "quantmesh-notify/1"
_MAX_ERROR_TEXT: Final = 200  # characters of a refusal's answer in the error
_MAX_ANSWER_BYTES: Final = 4096  # of a refusal's answer read, at most
_MIN_SECRET_PIECE: Final = 8  # a shorter URL path ("/hook") is no secret worth hiding


class DeliveryFailed(Exception):
    """A message did not arrive. ``retry``: a later attempt may succeed; ``retry_after``:
    seconds the receiver asked to wait (429), if it said."""

    def __init__(self, reason: str, *, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.retry_after = retry_after


class Channel(Protocol):
    """One receiver of messages."""

    name: str

    async def send(self, event: Event) -> None:
        """Deliver ``event`` once; raises ``DeliveryFailed``."""
        ...

    async def close(self) -> None: ...

    def secrets(self) -> list[str]:
        """What must never be logged (URL, token, signing secret)."""
        ...


def retry_after(headers: Mapping[str, str], body: Mapping[str, object] | None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), else from a JSON
    body's ``retry_after`` (Discord) or ``parameters.retry_after`` (Telegram). Pure."""
    header = headers.get("Retry-After")
    if header:
        try:
            return max(float(header), 0.0)
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError):
                parsed = None  # neither: fall back on the body, else the queue's backoff
            if parsed is not None and parsed.tzinfo is not None:
                return max(parsed.timestamp() - time.time(), 0.0)
    if body is not None:
        parameters = body.get("parameters")
        for source in (body, parameters if isinstance(parameters, dict) else {}):
            value = source.get("retry_after")
            if isinstance(value, int | float) and not isinstance(value, bool):
                return max(float(value), 0.0)
    return None


@dataclass
class HttpChannel:
    """POSTs a body made from each event to one URL; the kinds differ in what they post."""

    name: str
    url: str = field(repr=False)
    render: Callable[[Event], tuple[bytes, dict[str, str]]] = field(repr=False)
    timeout: float = 10.0
    hidden: tuple[str, ...] = field(default=(), repr=False)  # secrets besides the URL
    session: aiohttp.ClientSession | None = field(default=None, repr=False)

    async def send(self, event: Event) -> None:
        body, headers = self.render(event)
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        try:
            async with self.session.post(
                self.url,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return
                said = await response.content.read(_MAX_ANSWER_BYTES)
                text = said.decode(errors="replace")
                raise self._refused(response.status, response.headers, text)
        except DeliveryFailed:
            raise
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self.timeout:g} s", retry=True) from None
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}", retry=True) from None

    def _refused(self, status: int, headers: Mapping[str, str], text: str) -> DeliveryFailed:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        said = redact(text.strip().replace("\n", " "), self.secrets())[:_MAX_ERROR_TEXT]
        reason = f"HTTP {status}" + (f": {said}" if said else "")
        if status == 429:
            return DeliveryFailed(reason, retry=True, retry_after=retry_after(headers, body))
        retry = status >= 500 or status == 408
        return DeliveryFailed(reason, retry=retry, retry_after=retry_after(headers, body))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def secrets(self) -> list[str]:
        """The URL, its path and query (a webhook's token is often in its path), and the
        channel's other secrets."""
        parts = urlsplit(self.url)
        pieces = [p for p in (parts.path, parts.query) if len(p) >= _MIN_SECRET_PIECE]
        return [self.url, *pieces, *self.hidden]


def _json(payload: Mapping[str, Json]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def build_channel(
    settings: ChannelSettings,
    name: str,
    instance: str,
    clock: Callable[[], float] = time.time,
) -> HttpChannel:
    """The channel ``settings`` describe, sending as ``instance``."""
    url = settings.webhook_url.get_secret_value() if settings.webhook_url is not None else ""
    if settings.type == "webhook":
        secret = settings.secret.get_secret_value() if settings.secret is not None else ""

        def webhook(event: Event) -> tuple[bytes, dict[str, str]]:
            body = webhook_body(event, instance)
            headers = {"X-QuantMesh-Event": event.kind, "X-QuantMesh-Delivery": event.id}
            if secret:
                stamp = str(int(clock()))
                headers[TIMESTAMP_HEADER] = stamp
                headers[SIGNATURE_HEADER] = signature(secret, stamp, body)
            return body, headers

        return HttpChannel(name, url, webhook, settings.timeout, (secret,) if secret else ())
    if settings.type == "telegram":
        assert settings.token is not None and settings.chat_id is not None  # by the schema
        token, chat = settings.token.get_secret_value(), settings.chat_id
        endpoint = f"{settings.api_base}/bot{token}/sendMessage"
        return HttpChannel(
            name,
            endpoint,
            lambda event: (_json(telegram_payload(event, instance, chat)), {}),
            settings.timeout,
            (token,),
        )
    if settings.type == "slack":
        return HttpChannel(
            name, url, lambda e: (_json(slack_payload(e, instance)), {}), settings.timeout
        )
    return HttpChannel(
        name, url, lambda e: (_json(discord_payload(e, instance)), {}), settings.timeout
    )
