"""One producer, many consumers: the subscription queues behind ``watch_ticks``/``watch_orders``.

Shared by the in-process simulated exchange and the ccxt adapter, so both deliver prices
and order updates with the same semantics: ticks in a bounded queue that drops its oldest
item (a slow consumer always gets the latest price), order updates in an unbounded one
(none is ever dropped).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar
from weakref import WeakSet

T = TypeVar("T")


class Subscription(Generic[T]):
    """One consumer's queue; a bounded one drops its oldest item when full.

    A plain async iterator rather than an async generator: cancelling a pending
    ``__anext__`` (a timeout around it) leaves it usable. The owner set is weak, so an
    iterator its consumer dropped unsubscribes itself.
    """

    __slots__ = ("__weakref__", "_ended", "_owner", "_queue")

    def __init__(self, owner: WeakSet[Subscription[T]], maxsize: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(maxsize)  # None: the end
        self._ended = False

    def register(self) -> None:
        self._owner.add(self)

    def push(self, item: T | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(item)

    def end(self) -> None:
        """Stop after the items already queued (a full bounded queue loses its oldest)."""
        if not self._ended:
            self._ended = True
            self._owner.discard(self)
            self.push(None)

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        if self._ended and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Unsubscribe."""
        self.end()


def publish(subscribers: WeakSet[Subscription[T]], item: T) -> None:
    """Hand ``item`` to every current subscriber."""
    for subscription in list(subscribers):
        subscription.push(item)


def end_all(subscribers: WeakSet[Subscription[T]]) -> None:
    for subscription in list(subscribers):
        subscription.end()
