"""The token events of generation jobs: a capped stream per job (keys.generation_events).

The worker writes one step of its running batch at once (`publish`: one pipelined round
trip for every sequence's event and every job's cancel mark and owner); the gateway tails
one job's stream (`read`). Events are hints for a fast stream: the job's one outcome is its
fenced COMPLETE, whose GenerateOutput holds every token, so a reader that missed events (or
read a retried attempt's duplicates) still gives each token exactly once, by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from runtime.queue.v1.queue_pb2 import GenerationEvent
from scheduler import keys
from scheduler.redis_types import Streams

EVENTS_MAXLEN = 5000  # > the most tokens of a request, with room for a retried attempt
READ_COUNT = 512


@dataclass(frozen=True)
class JobMarks:
    """What a worker learns of its running jobs at each step."""

    cancelled: frozenset[str]  # the caller cancelled: stop now
    lost: frozenset[str]  # no longer this worker's (lease reclaimed, or the job ended)


class GenerationEvents:
    def __init__(self, client: aioredis.Redis, ttl_ms: int) -> None:
        self._redis = client
        self._ttl_ms = ttl_ms

    async def publish(self, model: str, consumer: str,
                      events: Sequence[tuple[str, GenerationEvent]],
                      running: Sequence[str]) -> JobMarks:
        """Appends each (job id, event) to its job's stream and reads the cancel mark and
        owner of every running job, in one pipelined round trip."""
        pipe = self._redis.pipeline(transaction=False)
        writes = 0
        for job_id, event in events:
            key = keys.generation_events(model, job_id)
            pipe.xadd(key, {"ev": event.SerializeToString()}, maxlen=EVENTS_MAXLEN,
                      approximate=True)
            writes += 1
            # The TTL is set by an attempt's first event and renewed by its last (a
            # generation lasts far less than the result TTL): not one PEXPIRE per token.
            if event.index == 0 or event.is_last:
                pipe.pexpire(key, self._ttl_ms)
                writes += 1
        for job_id in running:
            pipe.hmget(keys.job(model, job_id), "cancel", "owner", "state")
        replies = await pipe.execute()
        marks = cast("list[list[bytes | None]]", replies[writes:])
        cancelled, lost = set(), set()
        for job_id, (cancel, owner, state) in zip(running, marks, strict=True):
            if cancel == b"1":
                cancelled.add(job_id)
            elif state != b"RUNNING" or owner != consumer.encode():
                lost.add(job_id)
        return JobMarks(frozenset(cancelled), frozenset(lost))

    async def read(self, model: str, job_id: str, after: str,
                   block_ms: int | None) -> tuple[list[GenerationEvent], str]:
        """The job's events after stream id `after` ("0-0": from the first), waiting up
        to block_ms for one (None: not at all); and the id to read after next."""
        reply = cast("Streams | None", await self._redis.xread(
            {keys.generation_events(model, job_id): after}, count=READ_COUNT, block=block_ms))
        found = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                found.append(GenerationEvent.FromString(fields[b"ev"]))
                after = entry_id.decode()
        return found, after
