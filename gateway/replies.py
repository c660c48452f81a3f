"""ReplyDispatcher: one task per gateway reads its reply stream and wakes the waiting calls."""

from __future__ import annotations

import asyncio
import logging
import time

from runtime import metrics
from runtime.queue.v1.queue_pb2 import JobResult
from scheduler.connection import TRANSIENT_ERRORS
from scheduler.replies import ReplyStream

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # longest wait of one read of the reply stream


class ReplyDispatcher:
    """Completes waiters by job id. Register a waiter before submitting the job."""

    def __init__(self, stream: ReplyStream) -> None:
        self._stream = stream
        self._waiters: dict[str, asyncio.Future[JobResult]] = {}
        self._read_at = time.monotonic()  # when the last read of the stream returned

    @property
    def is_reading(self) -> bool:
        """Whether Redis answers: a read blocks at most BLOCK_MS, so a longer silence (or a
        failed read) means it is unreachable."""
        return time.monotonic() - self._read_at < (BLOCK_MS + 250) / 1000

    def expect(self, job_id: str) -> asyncio.Future[JobResult]:
        future = self._waiters.get(job_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[job_id] = future
        return future

    def forget(self, job_id: str) -> None:
        self._waiters.pop(job_id, None)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def run(self) -> None:
        """Reads replies until cancelled; survives Redis going away."""
        backoff_s = 0.05
        while True:
            try:
                replies = await self._stream.read(block_ms=BLOCK_MS)
                self._read_at = time.monotonic()
                backoff_s = 0.05
            except TRANSIENT_ERRORS as exc:
                metrics.REDIS_ERRORS.labels("gateway").inc()
                log.warning("reply stream unreachable (%s); retrying in %.2fs", exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 2.0)
                continue
            for reply in replies:
                future = self._waiters.pop(reply.job_id, None)
                if future is not None and not future.done():
                    future.set_result(reply.result)
