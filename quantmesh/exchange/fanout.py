"""One producer, many consumers: the subscription queues behind ``watch_ticks``/``watch_orders``.

Shared by the in-process simulated exchange and the ccxt adapter, so both deliver prices
and order updates with the same semantics: ticks in a bounded queue that drops its oldest
item (a slow consumer always gets the latest price), order updates in an unbounded one
(none is ever dropped).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Generic, TypeVar

T = TypeVar("T")


class Subscribers(Generic[T]):
    """The subscriptions of one stream, held weakly: an iterator its consumer dropped
    unsubscribes itself.

    Weak references in a dict rather than a ``WeakSet``: handing an item out walks a tuple
    of references, where a ``WeakSet`` walk enters its iteration guard every time - the
    simulated exchange does it for every price of every symbol.
    """

    __slots__ = ("__weakref__", "_refs")

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref[Subscription[T]]] = {}

    def add(self, subscription: Subscription[T]) -> None:
        key = id(subscription)
        me = weakref.ref(self)

        def forget(ref: weakref.ref[Subscription[T]]) -> None:
            subscribers = me()
            if subscribers is not None and subscribers._refs.get(key) is ref:
                del subscribers._refs[key]

        self._refs[key] = weakref.ref(subscription, forget)

    def discard(self, subscription: Subscription[T]) -> None:
        ref = self._refs.get(id(subscription))
        if ref is not None and ref() is subscription:
            del self._refs[id(subscription)]

    def current(self) -> list[Subscription[T]]:
        """The live subscriptions now (a copy: pushing may end one)."""
        return [s for s in (r() for r in tuple(self._refs.values())) if s is not None]

    def publish(self, item: T) -> None:
        """Hand ``item`` to every current subscription."""
        for ref in tuple(self._refs.values()):
            subscription = ref()
            if subscription is not None:
                subscription.push(item)

    def end_all(self) -> None:
        for subscription in self.current():
            subscription.end()

    def __len__(self) -> int:
        return len(self.current())


class Subscription(Generic[T]):
    """One consumer's queue; a bounded one drops its oldest item when full.

    A plain async iterator rather than an async generator: cancelling a pending
    ``__anext__`` (a timeout around it) leaves it usable. Its owner holds it weakly, so an
    iterator its consumer dropped unsubscribes itself.
    """

    __slots__ = ("__weakref__", "_ended", "_owner", "_queue")

    def __init__(self, owner: Subscribers[T], maxsize: int) -> None:
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
