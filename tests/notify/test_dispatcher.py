"""Routing in one process: which channel gets which event, rejection bursts, the stub risk
trigger, and that emitting never waits nor raises."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from quantmesh.config.notifications import NotificationSettings
from quantmesh.notify.build import build_notifier, send_test, wanted_events
from quantmesh.notify.bursts import RejectionBursts
from quantmesh.notify.dispatcher import Dispatcher
from quantmesh.notify.events import (
    DEFAULT_EVENTS,
    EVENT_KINDS,
    NOP,
    Event,
    Notifier,
    lock_recovered,
    order_rejected,
    risk_triggered,
    round_trip,
)
from tests.support import FakeClock, free_port

from .support import Receiver, Reply, counted, sample

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


def notifier(receiver: Receiver, channels: list[dict[str, object]], **kw: object) -> Dispatcher:
    for channel in channels:
        channel.setdefault("webhook_url", receiver.url(f"/{channel.get('name', channel['type'])}"))
    settings = NotificationSettings.model_validate({"channels": channels, **kw})
    built = build_notifier(settings, instance="node-a", registry=CollectorRegistry())
    assert isinstance(built, Dispatcher)
    return built


def paths(receiver: Receiver) -> list[str]:
    return sorted(r.path for r in receiver.delivered)


class StubRiskTrigger:
    """Stands in for the risk triggers of the risk issue (not built yet): fires once when
    the price falls below ``floor``, and tells the notifier it was given."""

    def __init__(self, symbol: str, floor: Decimal, notifier: Notifier) -> None:
        self.symbol, self.floor, self.notifier = symbol, floor, notifier
        self.fired = False

    def on_price(self, price: Decimal) -> None:
        if not self.fired and price < self.floor:
            self.fired = True
            self.notifier.emit(
                risk_triggered(self.symbol, "stop_loss", f"price {price} below {self.floor}")
            )


def test_all_means_every_event_but_round_trips() -> None:
    assert wanted_events(("all",)) == DEFAULT_EVENTS
    assert "round_trip" not in DEFAULT_EVENTS and len(DEFAULT_EVENTS) == len(EVENT_KINDS) - 1
    assert wanted_events(("all", "round_trip")) == frozenset(EVENT_KINDS)
    assert wanted_events(("lock_halted",)) == {"lock_halted"}


def test_without_channels_the_notifier_is_the_no_op() -> None:
    built = build_notifier(NotificationSettings(), instance="a", registry=CollectorRegistry())
    assert built is NOP
    NOP.emit(lock_recovered("halted", 1.0))  # nothing happens, nothing raises


async def test_each_channel_gets_the_events_it_lists_at_its_level(receiver: Receiver) -> None:
    dispatcher = notifier(
        receiver,
        [
            {"type": "webhook", "name": "everything"},
            {"type": "slack", "name": "critical", "min_level": "critical"},
            {"type": "discord", "name": "trips", "events": ["round_trip"]},
        ],
    )
    await dispatcher.start()
    try:
        dispatcher.emit(lock_recovered("halted", 3.0))  # info
        dispatcher.emit(round_trip("ETH/USDT", 3, 1, Decimal("0.01"), Decimal("0.12")))
        trigger = StubRiskTrigger("ETH/USDT", Decimal(1900), dispatcher)
        trigger.on_price(Decimal(1950))
        trigger.on_price(Decimal(1890))
        trigger.on_price(Decimal(1880))  # fired once only
        await receiver.wait_delivered(4)
        await asyncio.sleep(0.2)  # nothing more arrives
    finally:
        await dispatcher.close()
    by_path: dict[str, list[str]] = {}
    for request in receiver.delivered:
        body = request.json()
        by_path.setdefault(request.path, []).append(
            body.get("event") or body.get("content") or body.get("text")
        )
    assert by_path["/everything"] == ["lock_recovered", "risk_triggered"]
    assert len(by_path["/critical"]) == 1 and "risk trigger stop_loss" in by_path["/critical"][0]
    assert len(by_path["/trips"]) == 1 and "round trip" in by_path["/trips"][0]


async def test_a_burst_of_rejections_makes_one_message(receiver: Receiver) -> None:
    dispatcher = notifier(receiver, [{"type": "webhook"}], rejection_burst=3)
    await dispatcher.start()
    try:
        for reason in ("insufficient_funds", "insufficient_funds", "min_notional", "x", "y"):
            dispatcher.emit(order_rejected("ETH/USDT", reason))
        dispatcher.emit(order_rejected("BTC/USDT", "x"))  # another symbol: its own count
        [request] = await receiver.wait_delivered(1)
        await asyncio.sleep(0.2)
    finally:
        await dispatcher.close()
    assert len(receiver.delivered) == 1
    body = request.json()
    assert body["event"] == "orders_rejected" and body["symbol"] == "ETH/USDT"
    assert body["data"]["count"] == 3
    assert body["data"]["reasons"] == {"insufficient_funds": 2, "min_notional": 1}


def test_bursts_count_within_the_window_and_then_rest() -> None:
    clock = FakeClock(0.0)
    bursts = RejectionBursts(3, 10.0, clock)
    assert bursts.note("A", "r") is None
    clock.now = 11.0  # the first fell out of the window
    assert bursts.note("A", "r") is None
    assert bursts.note("A", "r") is None
    event = bursts.note("A", "r")
    assert event is not None and event.data["count"] == 3
    for _ in range(5):  # quiet for a window after a burst
        assert bursts.note("A", "r") is None
    clock.now = 21.5
    assert [bursts.note("A", "r") for _ in range(3)][-1] is not None


async def test_emit_only_enqueues_and_never_raises(receiver: Receiver) -> None:
    registry = CollectorRegistry()
    settings = NotificationSettings.model_validate(
        {"channels": [{"type": "webhook", "webhook_url": receiver.url(), "queue_size": 10}]}
    )
    dispatcher = build_notifier(settings, instance="a", registry=registry)
    await dispatcher.start()
    try:
        for _ in range(1000):  # no await between: the sender cannot take any out meanwhile
            dispatcher.emit(lock_recovered("halted", 1.0))
        broken = Event("lock_recovered", "info", "t", "t", "instance", data={"x": 1})
        object.__setattr__(broken, "level", "nonsense")  # a bug in an emitter
        dispatcher.emit(broken)  # logged, not raised
        assert sample(registry, "webhook", "dropped") == 990  # at once: nothing was sent yet
        await counted(registry, "webhook", "sent", 10)
    finally:
        await dispatcher.close()


async def test_send_test_tells_per_channel_whether_its_message_arrived(
    receiver: Receiver,
) -> None:
    receiver.replies.append(Reply(401, {}, '{"ok": false, "description": "Unauthorized"}'))
    settings = NotificationSettings.model_validate(
        {
            "channels": [
                {
                    "type": "telegram",
                    "token": "5:bad-token-value",
                    "chat_id": "1",
                    "api_base": f"http://127.0.0.1:{receiver.port}",
                },
                {"type": "webhook", "webhook_url": receiver.url("/ok")},
                {"type": "webhook", "webhook_url": f"http://127.0.0.1:{free_port()}/down"},
            ]
        }
    )
    outcomes = await send_test(settings, "node-a")
    assert outcomes == {
        "telegram": 'HTTP 401: {"ok": false, "description": "Unauthorized"}',
        "webhook": None,
        "webhook-2": "ClientConnectorError",
    }
    [webhook] = [r.json() for r in receiver.delivered]
    assert webhook["event"] == "test" and webhook["instance"] == "node-a"
