"""The subscriptions behind watch_ticks/watch_orders: weakly held, pushed in one pass."""

from __future__ import annotations

import gc
from typing import TypeVar

from quantmesh.exchange.fanout import Subscribers, Subscription

T = TypeVar("T")


def _subscribed(subscribers: Subscribers[T], maxsize: int = 0) -> Subscription[T]:
    subscription = Subscription(subscribers, maxsize)
    subscription.register()
    return subscription


async def test_every_live_subscription_gets_the_item_and_a_dropped_one_leaves() -> None:
    subscribers: Subscribers[int] = Subscribers()
    kept, dropped = _subscribed(subscribers), _subscribed(subscribers)
    assert len(subscribers) == 2
    subscribers.publish(1)
    del dropped
    gc.collect()
    assert len(subscribers) == 1
    subscribers.publish(2)
    assert [await anext(kept), await anext(kept)] == [1, 2]


async def test_an_ended_subscription_is_discarded_and_stops_after_its_items() -> None:
    subscribers: Subscribers[str] = Subscribers()
    first, second = _subscribed(subscribers), _subscribed(subscribers)
    subscribers.publish("a")
    first.end()
    assert subscribers.current() == [second]
    subscribers.publish("b")
    assert [item async for item in first] == ["a"]
    subscribers.end_all()
    assert [item async for item in second] == ["a", "b"]
    assert len(subscribers) == 0


async def test_a_bounded_subscription_keeps_the_latest_items() -> None:
    subscribers: Subscribers[int] = Subscribers()
    ticks = _subscribed(subscribers, 2)
    for price in range(5):
        subscribers.publish(price)
    ticks.end()  # drops the oldest of the full queue to make room for the end
    assert [item async for item in ticks] == [4]
