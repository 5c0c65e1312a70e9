"""The notification settings (``notifications``): the channels, what each sends, and the
daily summary."""

from __future__ import annotations

import re
import typing
from datetime import time
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, SecretStr, field_validator, model_validator

from quantmesh.config.fields import INSTANCE_ID, Count, Seconds, Section
from quantmesh.config.problems import FieldProblems

NotificationEvent = Literal[
    "instance_started",
    "instance_stopped",
    "symbol_taken_over",
    "lock_halted",
    "lock_recovered",
    "db_outage_began",
    "db_outage_ended",
    "risk_triggered",
    "orders_rejected",
    "daily_summary",
    "round_trip",
]
NotificationLevel = Literal["info", "warning", "critical"]
# what a channel's ``events`` lists: event names, or all
NotificationEventChoice = Literal[
    "all",
    "instance_started",
    "instance_stopped",
    "symbol_taken_over",
    "lock_halted",
    "lock_recovered",
    "db_outage_began",
    "db_outage_ended",
    "risk_triggered",
    "orders_rejected",
    "daily_summary",
    "round_trip",
]


class ChannelSettings(Section):
    """One channel: where messages go (``type`` and its keys), the events it wants, the
    least level it wants.

    - ``webhook``: ``webhook_url``; optional ``secret`` signs each body (HMAC-SHA256);
    - ``telegram``: ``token`` and ``chat_id`` (usually ``${ENV}``), ``api_base``;
    - ``slack``, ``discord``: the incoming webhook's ``webhook_url``.

    A webhook URL is a credential (Slack's and Discord's carry their token in the path):
    it is masked whole wherever settings are shown, and never logged.
    """

    type: Literal["webhook", "telegram", "slack", "discord"]
    name: str | None = None  # in logs and the metric's channel label; default: its type
    webhook_url: SecretStr | None = None  # webhook, slack, discord
    secret: SecretStr | None = None  # webhook: HMAC-SHA256 key of X-QuantMesh-Signature
    token: SecretStr | None = None  # telegram: the bot token
    chat_id: str | None = None  # telegram: the chat's id, or @channelname
    api_base: str = "https://api.telegram.org"  # telegram
    # event names, or all (every event but round_trip, which a channel lists to get it)
    events: tuple[NotificationEventChoice, ...] = ("all",)
    min_level: NotificationLevel = "info"
    timeout: Seconds = 10.0  # one delivery attempt
    queue_size: Count = 1000  # messages waiting for this channel; more are dropped, counted

    @field_validator("events")
    @classmethod
    def _some_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must not be empty: list event names, or all")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not INSTANCE_ID.fullmatch(value):
            raise ValueError("must be 1-64 characters from A-Z a-z 0-9 _ . -")
        return value

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("webhook_url", "secret", "token", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        """A credential given as a number or a list is refused without echoing it."""
        if value is not None and not isinstance(value, str | SecretStr):
            raise ValueError("must be text: put it in quotes")
        return value

    @model_validator(mode="after")
    def _check_type(self) -> ChannelSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        required, optional = _CHANNEL_KEYS[self.type]
        for key in ("webhook_url", "secret", "token", "chat_id"):
            value = getattr(self, key)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if value is not None and key not in required + optional:
                problems.append(((key,), f"not a key of type {self.type}: remove it"))
            elif key in required and not (text or "").strip():
                problems.append(((key,), f"required for type {self.type}: {_HINTS[key]}"))
            elif key == "webhook_url" and text and not _is_http_url(text):
                problems.append(((key,), "must be an http:// or https:// URL"))
        if self.type == "telegram" and not _is_http_url(self.api_base):
            problems.append((("api_base",), "must be an http:// or https:// URL"))
        if problems:
            raise FieldProblems(problems)
        return self


# the keys of each channel type: (required, optional)
_CHANNEL_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "webhook": (("webhook_url",), ("secret",)),
    "telegram": (("token", "chat_id"), ()),
    "slack": (("webhook_url",), ()),
    "discord": (("webhook_url",), ()),
}
_HINTS = {
    "webhook_url": "the endpoint's http(s) URL, e.g. webhook_url: ${WEBHOOK_URL}",
    "token": "the bot token from @BotFather, e.g. token: ${TELEGRAM_BOT_TOKEN}",
    "chat_id": "the chat's id or @channelname, e.g. chat_id: ${TELEGRAM_CHAT_ID}",
}


def _is_http_url(text: str) -> bool:
    """An ``http://`` or ``https://`` URL with a host."""
    try:
        parts = urlsplit(text.strip())
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def _utc_time(value: Any) -> Any:
    """``HH:MM`` (normalised); YAML 1.1 reads an unquoted ``21:00`` as 1260 (base 60)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return "{:02d}:{:02d}".format(*divmod(value, 60))
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", value)
        if match is None or int(match[1]) > 23 or int(match[2]) > 59:
            raise ValueError("must be a UTC time HH:MM, e.g. '21:00'")
        return f"{int(match[1]):02d}:{match[2]}"
    return value


class NotificationSettings(Section):
    """Messages people receive (``quantmesh.notify``): any number of channels."""

    channels: tuple[ChannelSettings, ...] = ()
    # the daily summary of each instance, at this UTC time (null: none)
    daily_summary_at: Annotated[str | None, BeforeValidator(_utc_time)] = "00:00"
    dedupe_window: Seconds = 60.0  # a fleet event is sent by one instance per this window
    retry_for: Seconds = 3600.0  # a message not delivered after this long is given up
    rejection_burst: Count = 5  # this many orders of a symbol rejected ...
    rejection_window: Seconds = 60.0  # ... within this many seconds: one message

    @property
    def daily_summary_time(self) -> time | None:
        """``daily_summary_at`` as a time of day (UTC), or None."""
        if self.daily_summary_at is None:
            return None
        hours, _, minutes = self.daily_summary_at.partition(":")
        return time(int(hours), int(minutes))

    @model_validator(mode="after")
    def _unique_names(self) -> NotificationSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[str, int] = {}
        for index, name in enumerate(channel_names(self.channels)):
            if name in seen:
                why = f"duplicate of channels[{seen[name]}] ({name}): give each its own name"
                problems.append((("channels", index, "name"), why))
            seen.setdefault(name, index)
        if problems:
            raise FieldProblems(problems)
        return self


def channel_names(channels: typing.Sequence[ChannelSettings]) -> list[str]:
    """Each channel's name: its ``name``, else its type (``webhook``, ``webhook-2``, ...)."""
    names: list[str] = []
    counts: dict[str, int] = {}
    for channel in channels:
        kind = channel.type
        counts[kind] = counts.get(kind, 0) + 1
        names.append(channel.name or (kind if counts[kind] == 1 else f"{kind}-{counts[kind]}"))
    return names
