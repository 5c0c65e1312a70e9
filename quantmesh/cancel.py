"""Cancelling a task and waiting until it has really ended.

Cancellation can be swallowed on its way down: on Python 3.11, ``asyncio.wait_for`` (used
inside client libraries) may return a result that arrived together with the cancellation,
and a timeout that expires at the same moment turns it into ``TimeoutError``. A task that
swallowed it runs on, and ``await task`` waits forever. ``cancel_and_wait`` cancels again
until the task has ended; a loop that must end when cancelled checks ``cancelling`` at each
turn (``stop_if_cancelling``), since a task group cancels its tasks only once.
"""

from __future__ import annotations

import asyncio

import structlog

_log = structlog.get_logger(__name__)

# How long one cancellation may take to end the task before it is cancelled again: long
# enough for the cleanup a cancelled task does on its way out (giving back a lease,
# recording it released), short enough not to stall a shutdown for long.
PATIENCE = 5.0


async def cancel_and_wait(
    *tasks: asyncio.Task[object] | asyncio.Future[object], patience: float = PATIENCE
) -> None:
    """Cancel ``tasks`` and return once every one has ended (results and errors dropped);
    a task still running ``patience`` seconds after a cancellation is cancelled again.

    A cancellation of the caller meanwhile propagates at once (the tasks have been
    cancelled, not necessarily ended).
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience)
        for task in pending:  # swallowed, or a slow cleanup: where it is now says which
            _log.warning("task_outlived_cancel", task=_describe(task), patience=patience)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception never retrieved" warning


def cancelling() -> bool:
    """Whether the current task was asked to stop: its cancellation may have been swallowed
    on the way down (see the module docstring), so a loop checks this at each turn."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def stop_if_cancelling() -> None:
    """Raise ``CancelledError`` when the current task was asked to stop: a loop's guard
    against running on after a cancellation a client swallowed."""
    if cancelling():
        raise asyncio.CancelledError


def _describe(task: asyncio.Task[object] | asyncio.Future[object]) -> str:
    """A task's name and where it waits: the chain of coroutines it is awaiting, outermost
    first (``Task.print_stack`` shows only the outermost one), and what the innermost awaits."""
    if not isinstance(task, asyncio.Task):
        return repr(task)
    where: list[str] = []
    awaited: object = task.get_coro()
    while awaited is not None and len(where) < 40:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:  # a future, or a coroutine that has ended
            where.append(repr(awaited)[:200])
            break
        where.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return f"{task.get_name()}: " + " -> ".join(where)[-2500:]
