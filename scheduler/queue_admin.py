"""QueueAdmin: operators' and inspectors' side of the queue: consumer groups, dead letters
and redrive, a job's raw hash, a tenant's queued count, a model's statistics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from redis.exceptions import ResponseError

from scheduler import keys
from scheduler.job_types import DeadLetter
from scheduler.queue_core import QueueCore, _s
from scheduler.queue_stats import QueueStats, merged, read_queue_stats
from scheduler.redis_types import Entry, Fields


class QueueAdmin(QueueCore):
    async def ensure_group(self, model: str) -> None:
        """Creates the priority streams of the model's queues and their consumer group
        (idempotent). `model` is a model (all its queues: scheduler/shards.py) or a queue."""
        queues = [model] if keys.SHARD_SEP in model else self.shards.queues(model)
        for level in keys.LEVELS:
            for queue in queues:
                try:
                    await self._redis.xgroup_create(keys.stream(queue, level), keys.GROUP,
                                                    id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def job_state(self, model: str, job_id: str) -> dict[str, bytes]:
        """The job hash, for inspection and tests."""
        raw = cast("Fields", await self._redis.hgetall(keys.job(model, job_id)))
        return {_s(k): v for k, v in raw.items()}

    async def dead_letters(self, model: str, count: int = 100) -> list[DeadLetter]:
        """Dead-lettered jobs of a model (over its queues, each's oldest first)."""
        found: list[DeadLetter] = []
        for queue in self.shards.queues(model):
            found += await self._dead_letters(queue, count - len(found))
        return found

    async def _dead_letters(self, queue: str, count: int) -> list[DeadLetter]:
        if count <= 0:
            return []
        rows = cast("list[Entry]", await self._redis.xrange(keys.dead_letters(queue), count=count))
        found = []
        for entry_id, fields in rows:
            job_id = _s(fields[b"job"])
            has_env = await self._redis.hexists(keys.job(queue, job_id), "env")
            found.append(DeadLetter(_s(entry_id), job_id, int(fields.get(b"attempts", 0)),
                                    bool(has_env), queue))
        return found

    async def redrive(self, model: str, job_ids: Sequence[str] = ()) -> list[str]:
        """Queues dead-lettered jobs again (all of the model's when job_ids is empty), each on
        the queue it died on."""
        wanted = set(job_ids)
        done = []
        for queue in self.shards.queues(model):
            for letter in await self._dead_letters(queue, 10_000):
                if wanted and letter.job_id not in wanted:
                    continue
                if await self._scripts.redrive(
                        keys=[keys.stream(queue), keys.job(queue, letter.job_id),
                              keys.dead_letters(queue), *keys.queue_keys(queue)],
                        args=[letter.job_id, letter.entry_id]):
                    done.append(letter.job_id)
        return done

    async def tenant_queued(self, model: str, tenant: str) -> int:
        """Jobs of a tenant waiting on a model (stream entries not yet delivered + backlog),
        over the model's queues."""
        total = 0
        for queue in self.shards.queues(model):
            ready, backlog = await self._redis.hmget(keys.share(queue, tenant), "ready",
                                                     "backlog")
            total += int(ready or 0) + int(backlog or 0)
        return total

    async def stats(self, model: str, tenant: str) -> QueueStats:
        """What the model's queues hold by priority, with `tenant`'s backlog (read-only):
        one round trip per queue, added up."""
        return merged([await read_queue_stats(self._redis, queue, tenant)
                       for queue in self.shards.queues(model)])
