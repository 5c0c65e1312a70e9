"""Cancelling a task and waiting until it has really ended.

Cancellation can be swallowed on its way down: on Python 3.11, ``asyncio.wait_for`` (used
inside client libraries) may return a result that arrived together with the cancellation,
and a timeout that expires at the same moment turns it into ``TimeoutError``. A task that
swallowed it runs on, and ``await task`` waits forever. ``cancel_and_wait`` cancels again
until the task has ended.
"""

from __future__ import annotations

import asyncio
import io

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


def _describe(task: asyncio.Task[object] | asyncio.Future[object]) -> str:
    """A task's name and where it waits (its innermost frames)."""
    if not isinstance(task, asyncio.Task):
        return repr(task)
    out = io.StringIO()
    task.print_stack(limit=8, file=out)
    return f"{task.get_name()}: {out.getvalue()[-1500:]}"
