"""ReplyDispatcher: wakes the calls waiting on jobs, from the gateway's reply streams.

A gateway's replies come on one stream per model (keys.reply_stream: in the model's slot, so
the script that ends a job writes its reply atomically on a Redis Cluster too). A reader task
per model blocks on its stream while calls wait on that model, and ends once none has for
IDLE_S; the next call starts it again where it stopped (the stream object keeps its
position), so no reply written in between is missed. One model served, as in a benchmark:
one reader, one blocking read per wake, as with a single stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from runtime import metrics
from runtime.cancel import cancel_and_wait
from runtime.queue.v1.queue_pb2 import JobResult
from scheduler.connection import TRANSIENT_ERRORS
from scheduler.replies import Reply, ReplyStream

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # longest wait of one read of a reply stream
IDLE_S = 30.0  # a model's reader ends this long after its last waiter

OpenStream = Callable[[str], ReplyStream]  # model -> its reply stream of this gateway


class ReplyDispatcher:
    """Completes waiters by job id. Call `expect` before submitting the job (its reply_to
    is `reply_key(model)`)."""

    def __init__(self, open_stream: OpenStream) -> None:
        self._open = open_stream
        self._streams: dict[str, ReplyStream] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, tuple[str, asyncio.Future[JobResult]]] = {}
        self._per_model: Counter[str] = Counter()
        self._wanted_at: dict[str, float] = {}  # model -> when a call last waited on it
        self._read_at: dict[str, float] = {}  # model -> when its last read returned

    def reply_key(self, model: str) -> str:
        return self._stream(model).key

    def is_reading(self, model: str) -> bool:
        """Whether Redis answers this model's reader: a read blocks at most BLOCK_MS, so a
        longer silence (or a failed read) means it is unreachable."""
        read_at = self._read_at.get(model, 0.0)
        return time.monotonic() - read_at < (BLOCK_MS + 250) / 1000

    def expect(self, job_id: str, model: str) -> asyncio.Future[JobResult]:
        waiter = self._waiters.get(job_id)
        if waiter is not None:
            return waiter[1]
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self._waiters[job_id] = (model, future)
        self._per_model[model] += 1
        self._wanted_at[model] = time.monotonic()
        if model not in self._readers:
            self._read_at[model] = time.monotonic()  # reading from now: the read is starting
            self._readers[model] = asyncio.create_task(self._read(model),
                                                       name=f"replies:{model}")
        return future

    def forget(self, job_id: str) -> None:
        waiter = self._waiters.pop(job_id, None)
        if waiter is not None:
            self._per_model[waiter[0]] -= 1

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def readers(self) -> int:
        return len(self._readers)

    async def run(self) -> None:
        """Lives as long as the gateway; when cancelled, stops every model's reader."""
        try:
            await asyncio.Event().wait()
        finally:
            for reader in list(self._readers.values()):
                await cancel_and_wait(reader)

    def _stream(self, model: str) -> ReplyStream:
        stream = self._streams.get(model)
        if stream is None:
            stream = self._streams[model] = self._open(model)
        return stream

    def _is_idle(self, model: str) -> bool:
        return (self._per_model[model] <= 0
                and time.monotonic() - self._wanted_at.get(model, 0.0) > IDLE_S)

    async def _read(self, model: str) -> None:
        """Reads one model's replies until it is idle; survives Redis going away."""
        stream, backoff_s = self._stream(model), 0.05
        try:
            while not self._is_idle(model):
                try:
                    replies = await stream.read(block_ms=BLOCK_MS)
                    self._read_at[model] = time.monotonic()
                    backoff_s = 0.05
                except TRANSIENT_ERRORS as exc:
                    metrics.REDIS_ERRORS.labels("gateway").inc()
                    log.warning("reply stream %s unreachable (%s); retrying in %.2fs",
                                stream.key, exc, backoff_s)
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, 2.0)
                    continue
                self._dispatch(replies)
        finally:
            # No await between the idle check and this: an `expect` after it starts anew.
            if self._readers.get(model) is asyncio.current_task():
                del self._readers[model]

    def _dispatch(self, replies: list[Reply]) -> None:
        for reply in replies:
            waiter = self._waiters.pop(reply.job_id, None)
            if waiter is None:
                continue
            self._per_model[waiter[0]] -= 1
            if not waiter[1].done():
                waiter[1].set_result(reply.result)
