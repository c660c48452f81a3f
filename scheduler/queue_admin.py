"""QueueAdmin: operators' and inspectors' side of the queue: consumer groups, dead letters
and redrive, a job's raw hash, a tenant's queued count, a model's statistics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from redis.exceptions import ResponseError

from scheduler import keys
from scheduler.job_types import DeadLetter
from scheduler.queue_core import QueueCore, _s
from scheduler.queue_stats import QueueStats, read_queue_stats
from scheduler.redis_types import Entry, Fields


class QueueAdmin(QueueCore):
    async def ensure_group(self, model: str) -> None:
        """Creates the model's priority streams and their consumer group (idempotent)."""
        for level in keys.LEVELS:
            try:
                await self._redis.xgroup_create(keys.stream(model, level), keys.GROUP, id="0",
                                                mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def job_state(self, model: str, job_id: str) -> dict[str, bytes]:
        """The job hash, for inspection and tests."""
        raw = cast("Fields", await self._redis.hgetall(keys.job(model, job_id)))
        return {_s(k): v for k, v in raw.items()}

    async def dead_letters(self, model: str, count: int = 100) -> list[DeadLetter]:
        """Dead-lettered jobs of a model, oldest first."""
        rows = cast("list[Entry]", await self._redis.xrange(keys.dead_letters(model), count=count))
        found = []
        for entry_id, fields in rows:
            job_id = _s(fields[b"job"])
            has_env = await self._redis.hexists(keys.job(model, job_id), "env")
            found.append(DeadLetter(_s(entry_id), job_id, int(fields.get(b"attempts", 0)),
                                    bool(has_env)))
        return found

    async def redrive(self, model: str, job_ids: Sequence[str] = ()) -> list[str]:
        """Queues dead-lettered jobs again (all of the model's when job_ids is empty)."""
        wanted = set(job_ids)
        done = []
        for letter in await self.dead_letters(model, count=10_000):
            if wanted and letter.job_id not in wanted:
                continue
            if await self._scripts.redrive(
                    keys=[keys.stream(model), keys.job(model, letter.job_id),
                          keys.dead_letters(model), *keys.queue_keys(model)],
                    args=[letter.job_id, letter.entry_id]):
                done.append(letter.job_id)
        return done

    async def tenant_queued(self, model: str, tenant: str) -> int:
        """Jobs of a tenant waiting on a model (stream entries not yet delivered + backlog)."""
        ready, backlog = await self._redis.hmget(keys.share(model, tenant), "ready", "backlog")
        return int(ready or 0) + int(backlog or 0)

    async def stats(self, model: str, tenant: str) -> QueueStats:
        """What the model's queue holds by priority, with `tenant`'s backlog (read-only)."""
        return await read_queue_stats(self._redis, model, tenant)
