"""``GroupCommit``: the execution records of several symbols stored in one transaction.

Each trader's write-behind stores its queue head with ``record_batch``: one transaction per
symbol and run of writes, and a transaction's cost is mostly per statement (its round
trips, the driver's and SQLAlchemy's work per call), not per row. The traders of a service
share one ``GroupCommit``: a batch given while no transaction of the group runs is stored
at once, alone; the batches given while one runs wait for it, then go together into one
``record_batches`` transaction. An idle database gets each batch at once, a busy one
fewer, larger transactions.

Each batch's outcome is the one its own ``record_batch`` would have had:

- ``True``, or ``False`` for a stale fence: each symbol's fence is claimed alone, and a
  stale one leaves the other symbols' batches stored;
- an unreachable database (``StorageUnavailable``) fails every batch of the transaction:
  each would have failed alone;
- any other error fails no batch it does not belong to: every batch of that transaction is
  stored again, one transaction each, and gets its own outcome;
- a writer cancelled before its batch is taken gets nothing stored; one cancelled later
  may find it stored (as with any transaction it gave up on).

A symbol's batches keep their order: a symbol gives its next batch once the previous one
is stored, and a second batch of one symbol waits for the next transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from quantmesh.domain import Fill, Order
from quantmesh.errors import StorageUnavailable
from quantmesh.grid.state import LevelState, RoundTrip
from quantmesh.storage.base import ExecutionBatch, Repository

GROUP_RECORDS: Final = 2000  # records (orders, fills, levels) past which a group is closed

_Waiting = tuple[ExecutionBatch, "asyncio.Future[bool]"]


class GroupCommit:
    """``record_batch`` for the traders of one repository; see the module docstring."""

    def __init__(self, target: Repository, *, limit: int = GROUP_RECORDS) -> None:
        self._target = target
        self._limit = limit
        self._waiting: list[_Waiting] = []
        self._task: asyncio.Task[None] | None = None

    async def record_batch(
        self,
        symbol: str,
        orders: Sequence[Order],
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int,
    ) -> bool:
        """As ``Repository.record_batch``, stored with the batches given meanwhile."""
        batch = ExecutionBatch(
            symbol, tuple(orders), tuple(fills), tuple(levels), tuple(round_trips), fence
        )
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((batch, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._commit_waiting(), name="group-commit")
        return await future

    async def _commit_waiting(self) -> None:
        try:
            while group := self._take():
                await self._commit(group)
        except BaseException as exc:  # cancelled with the loop: no batch is left waiting
            for _, future in self._waiting:
                _settle(future, exc)
            self._waiting.clear()
            raise

    def _take(self) -> list[_Waiting]:
        """The waiting batches of the next transaction, oldest first: one per symbol, up to
        ``limit`` records (one batch at least). The rest keep waiting, in order."""
        group: list[_Waiting] = []
        left: list[_Waiting] = []
        symbols: set[str] = set()
        records = 0
        for batch, future in self._waiting:
            if future.done():  # its writer stopped waiting: it is never stored
                continue
            size = len(batch.orders) + len(batch.fills) + len(batch.levels)
            if batch.symbol in symbols or (group and records + size > self._limit):
                left.append((batch, future))
                continue
            group.append((batch, future))
            symbols.add(batch.symbol)
            records += size
        self._waiting = left
        return group

    async def _commit(self, group: list[_Waiting]) -> None:
        try:
            stored = await self._target.record_batches([batch for batch, _ in group])
        except StorageUnavailable as exc:  # the database's state: every batch's
            for _, future in group:
                _settle(future, exc)
        except Exception as exc:  # noqa: BLE001 - given to the batch it belongs to
            if len(group) == 1:
                _settle(group[0][1], exc)
                return
            for one in group:
                await self._commit([one])
        except BaseException as exc:
            for _, future in group:
                _settle(future, exc)
            raise
        else:
            for (_, future), result in zip(group, stored, strict=True):
                if not future.done():
                    future.set_result(result)


def _settle(future: asyncio.Future[bool], exc: BaseException) -> None:
    if future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(exc)
