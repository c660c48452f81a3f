"""runtime.cancel: a task that drops a cancellation is still stopped."""

from __future__ import annotations

import asyncio
import contextlib

from runtime.cancel import cancel_and_wait


async def test_a_task_that_drops_the_first_cancellation_is_cancelled_again() -> None:
    """As a loop does when Python 3.11's asyncio.wait_for (inside redis-py) drops the
    cancellation that arrives as its command completes: one cancel() is not enough."""
    dropped = 0

    async def loop_dropping_one_cancel() -> None:
        nonlocal dropped
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if dropped:
                    raise
                dropped += 1

    task = asyncio.create_task(loop_dropping_one_cancel())
    await asyncio.sleep(0)
    task.cancel()  # what a single cancel does: the task runs on
    await asyncio.sleep(0.05)
    assert dropped == 1 and not task.done()
    assert await cancel_and_wait(task) is True
    assert task.cancelled()


async def test_gives_up_after_the_timeout_on_a_task_that_never_ends() -> None:
    stop = asyncio.Event()

    async def never_ends() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # drops every cancellation
                await asyncio.sleep(0.01)

    task = asyncio.create_task(never_ends())
    await asyncio.sleep(0)
    started = asyncio.get_running_loop().time()
    assert await cancel_and_wait(task, timeout_s=0.3) is False
    assert 0.25 < asyncio.get_running_loop().time() - started < 2
    stop.set()
    await task


async def test_ended_tasks_keep_their_outcome() -> None:
    async def fails() -> None:
        raise ValueError("kept")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await cancel_and_wait(task) is True
    assert isinstance(task.exception(), ValueError)
