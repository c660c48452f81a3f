"""SubmitCoalescer: concurrent calls' jobs go to Redis together, one round trip per batch.

While one pipeline is in flight, new submits wait and go out in the next: under load
batches grow by themselves; alone, a submit goes out at once (no timer, no added delay).
Its jobs are synchronous calls' (a reply stream waits for each): they go lean where they
may (JobQueue.is_lean: one stream entry in, one reply out, no job hash).
"""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.queue.v1.queue_pb2 import JobEnvelope
from scheduler.queue import JobQueue

MAX_BATCH = 256


class SubmitCoalescer:
    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self._pending: list[tuple[JobEnvelope, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        # Pipelines sent so far: the jobs made while one is in flight go out together in the
        # next, so the jobs that see one count share a pipeline (InferencePlane puts them on
        # one queue of a sharded model: one script call, one worker batch).
        self.flushes = 0

    def submit(self, envelope: JobEnvelope, waiter: asyncio.Future[Any]) -> None:
        """Sends the job with the next pipeline. `waiter` is what its caller awaits (the
        reply's future): a refusal (QueueFull, ...) or a Redis error is set on it; an
        accepted job leaves it to the reply. One future per call, so the call's task wakes
        once, for its answer."""
        self._pending.append((envelope, waiter))
        self._wake.set()

    async def run(self) -> None:
        """Sends pending submits until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                self.flushes += 1
                await self._send(batch)

    async def _send(self, batch: list[tuple[JobEnvelope, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self.queue.submit_many([envelope for envelope, _ in batch],
                                                    lean=True)
        except Exception as exc:  # Redis away: every caller of this batch gets the error
            outcomes = [exc] * len(batch)
        if len(outcomes) != len(batch):  # never leave a caller waiting on a short reply
            outcomes = [RuntimeError("Redis answered a pipeline short")] * len(batch)
        for (_, waiter), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception) and not waiter.done():  # done: caller gone
                waiter.set_exception(outcome)
