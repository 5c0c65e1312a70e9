"""What each channel sends: the webhook's versioned JSON, and the text of a message.

Pure functions. The webhook body is schema ``quantmesh.notification/1``:

.. code-block:: json

    {"schema": "quantmesh.notification/1", "id": "5f0c...", "event": "symbol_taken_over",
     "level": "warning", "instance": "node-b", "symbol": "ETH/USDT",
     "at": "2026-12-04T11:22:33.123Z", "title": "ETH/USDT taken over",
     "text": "ETH/USDT taken over from node-a, ...",
     "data": {"previous_owner": "node-a", "unowned_seconds": 4.2}}

``id`` is the same on every retry of one event (a receiver can drop repeats); ``symbol``
is null for events of no one symbol; ``data`` holds the event's own fields (README).
Fields may be added within version 1; removing or changing one makes version 2.

The signature (with a ``secret``): ``X-QuantMesh-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``<X-QuantMesh-Timestamp>.<body>`` under the secret, where the timestamp
is the sending time in Unix seconds; a receiver checks it and refuses old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Final

from quantmesh.notify.events import Event, Json

SCHEMA: Final = "quantmesh.notification/1"
SIGNATURE_HEADER: Final = "X-QuantMesh-Signature"
TIMESTAMP_HEADER: Final = "X-QuantMesh-Timestamp"
_ICONS: Final = {"info": "ℹ️", "warning": "⚠️", "critical": "🚨"}  # noqa: RUF001 - emoji


def iso_time(at: float) -> str:
    """``2026-12-04T11:22:33.123Z``."""
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def webhook_payload(event: Event, instance: str) -> dict[str, Json]:
    """The event as schema ``quantmesh.notification/1``."""
    return {
        "schema": SCHEMA,
        "id": event.id,
        "event": event.kind,
        "level": event.level,
        "instance": instance,
        "symbol": event.symbol,
        "at": iso_time(event.at),
        "title": event.title,
        "text": event.text,
        "data": dict(event.data),
    }


def webhook_body(event: Event, instance: str) -> bytes:
    return json.dumps(webhook_payload(event, instance), separators=(",", ":")).encode()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-QuantMesh-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether ``header`` signs ``body`` (what a receiver does), in constant time."""
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def text_of(event: Event, instance: str) -> str:
    """The message as people read it in a chat: level, title, who, what."""
    icon = _ICONS.get(event.level, "")
    return f"{icon} [{instance}] {event.title}\n{event.text}".strip()


def telegram_payload(event: Event, instance: str, chat_id: str) -> dict[str, Json]:
    """Bot API ``sendMessage`` (plain text: nothing to escape)."""
    return {
        "chat_id": chat_id,
        "text": text_of(event, instance)[:4096],
        "disable_web_page_preview": True,
    }


def slack_payload(event: Event, instance: str) -> dict[str, Json]:
    """A Slack incoming webhook's message."""
    return {"text": text_of(event, instance)}


def discord_payload(event: Event, instance: str) -> dict[str, Json]:
    """A Discord webhook's message (``content`` holds at most 2000 characters)."""
    return {"content": text_of(event, instance)[:2000], "allowed_mentions": {"parse": []}}
