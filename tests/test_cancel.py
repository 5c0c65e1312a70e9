"""``cancel_and_wait``: a task that swallows a cancellation is cancelled until it ends."""

from __future__ import annotations

import asyncio

import structlog

from quantmesh.cancel import cancel_and_wait


async def test_a_task_that_swallows_its_first_cancellation_still_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as a library's wait_for may: the first one is lost

    task = asyncio.create_task(stubborn(), name="stubborn-task")
    await asyncio.sleep(0)
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(cancel_and_wait(task, patience=0.1), 5)
    assert task.cancelled() and swallowed == 1
    # which task outlived its cancellation, and where it waited, is logged once
    (outlived,) = [e for e in logs if e["event"] == "task_outlived_cancel"]
    assert outlived["task"].startswith("stubborn-task: ") and "in stubborn" in outlived["task"]


async def test_ended_and_failed_tasks_are_fine() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fail())
    await asyncio.sleep(0.01)
    await cancel_and_wait(done, failed)  # no error, no "never retrieved" warning
    assert done.done() and failed.done()
