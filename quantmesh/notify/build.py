"""Builds the notifier from ``notifications`` settings: a channel, a queue and a route
per configured channel, behind one ``Dispatcher``; ``NOP`` when none is configured."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter

from quantmesh.config.notifications import NotificationSettings, channel_names
from quantmesh.notify.bursts import RejectionBursts
from quantmesh.notify.channels import DeliveryFailed, HttpChannel, build_channel
from quantmesh.notify.dispatcher import Dispatcher, Job, Route
from quantmesh.notify.election import Election
from quantmesh.notify.events import (
    DEFAULT_EVENTS,
    EVENT_KINDS,
    NOP,
    NotificationService,
    notify_test_message,
)
from quantmesh.notify.queue import ChannelQueue
from quantmesh.secrets import redact


def notifications_counter(registry: CollectorRegistry) -> Counter:
    """``quantmesh_notifications_total{channel,outcome}`` on ``registry``."""
    return Counter(
        "quantmesh_notifications_total",
        "Notification messages by channel and outcome: sent, retried (an attempt failed, "
        "another follows), failed (given up), dropped (queue full), abandoned (queued at "
        "shutdown), deduplicated (another instance of the fleet sends it)",
        ["channel", "outcome"],
        registry=registry,
    )


def wanted_events(listed: tuple[str, ...]) -> frozenset[str]:
    """A channel's ``events``: ``all`` is every event but ``round_trip``."""
    chosen = set(listed) - {"all"}
    if "all" in listed:
        chosen |= DEFAULT_EVENTS
    return frozenset(kind for kind in EVENT_KINDS if kind in chosen)


def build_channels(settings: NotificationSettings, instance: str) -> list[HttpChannel]:
    """One channel per configured channel, named as ``channel_names`` says."""
    names = channel_names(settings.channels)
    return [
        build_channel(channel, name, instance)
        for channel, name in zip(settings.channels, names, strict=True)
    ]


def build_notifier(
    settings: NotificationSettings,
    *,
    instance: str,
    registry: CollectorRegistry,
    election: Election | None = None,
    jobs: Sequence[Job] = (),
) -> NotificationService:
    """The service's notifier: ``NOP`` without channels (nothing changes), else a
    ``Dispatcher`` over one bounded queue per channel."""
    if not settings.channels:
        return NOP
    counter = notifications_counter(registry)
    routes = [
        Route(
            ChannelQueue(
                channel, size=config.queue_size, counter=counter, retry_for=settings.retry_for
            ),
            wanted_events(config.events),
            config.min_level,
        )
        for channel, config in zip(
            build_channels(settings, instance), settings.channels, strict=True
        )
    ]
    return Dispatcher(
        routes,
        election=election,
        bursts=RejectionBursts(settings.rejection_burst, settings.rejection_window),
        jobs=jobs,
    )


async def send_test(settings: NotificationSettings, instance: str) -> dict[str, str | None]:
    """Send one test message to every channel at once, without queue or retry; per
    channel name, ``None`` when it arrived, else why not (no secret in it)."""
    channels = build_channels(settings, instance)

    async def one(channel: HttpChannel) -> str | None:
        try:
            await channel.send(notify_test_message())
        except DeliveryFailed as exc:
            return redact(exc.reason, channel.secrets())
        finally:
            await channel.close()
        return None

    outcomes = await asyncio.gather(*(one(channel) for channel in channels))
    return {channel.name: outcome for channel, outcome in zip(channels, outcomes, strict=True)}
