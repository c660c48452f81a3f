"""Stopping a task that may drop a cancellation.

On Python 3.11, `asyncio.wait_for` returns its inner call's result when the cancellation
arrives as that call completes, and the caller's task runs on: redis-py wraps every command
write in `wait_for` under `socket_timeout`. A loop cancelled once at that moment (a worker's
heartbeat, a gateway's reply reader) goes on forever, and whoever awaits it hangs. So a
task is cancelled again until it has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_S = 0.1  # how long a cancelled task has to end before it is cancelled again


async def cancel_and_wait(*tasks: asyncio.Future[Any], timeout_s: float | None = None) -> bool:
    """Cancels `tasks` and waits until each has ended, cancelling again those that run on;
    gives up after timeout_s (None: never). True when every task has ended. Their outcomes
    stay in the tasks (a caller that needs one awaits the task afterwards)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    pending = {task for task in tasks if not task.done()}
    while pending:
        left = RECANCEL_S if deadline is None else min(RECANCEL_S, deadline - loop.time())
        if left <= 0:
            return False
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=left)
    return True
