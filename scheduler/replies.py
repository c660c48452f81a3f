"""A gateway's reply streams, one per model it waits on: workers and queue scripts write
outcomes in the model's slot, one gateway reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from runtime.queue.v1.queue_pb2 import JobError, JobResult, JobState
from scheduler import keys
from scheduler.connection import read_streams
from scheduler.redis_types import Fields, Streams


@dataclass(frozen=True)
class Reply:
    job_id: str
    result: JobResult


def _decode(fields: Fields) -> Reply:
    job_id = fields[b"job"].decode()
    if b"result" in fields:
        return Reply(job_id, JobResult.FromString(fields[b"result"]))
    state = JobState.Value("JOB_STATE_" + fields[b"state"].decode())
    error = JobError(code=fields.get(b"code", b"").decode(),
                     reason=fields.get(b"reason", b"").decode(),
                     message=fields.get(b"message", b"").decode())
    return Reply(job_id, JobResult(job_id=job_id, state=state, error=error))


class ReplyStream:
    """Reads one gateway's reply stream of one model in order, from where it last stopped."""

    def __init__(self, client: aioredis.Redis, gateway_id: str, model: str) -> None:
        self._redis = client
        self.key = keys.reply_stream(model, gateway_id)
        self._last_id = "0-0"

    async def read(self, block_ms: int, count: int = 1024) -> list[Reply]:
        """Replies after the last one read; waits up to block_ms for one to arrive."""
        reply = cast("Streams | None", await read_streams(
            self._redis, {self.key: self._last_id}, count=count, block_ms=block_ms))
        out: list[Reply] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self._last_id = entry_id.decode()
                out.append(_decode(fields))
        # No trimming here: writers cap the stream (XADD MAXLEN ~ 10000), which keeps the
        # hot path at one round trip per read.
        return out
