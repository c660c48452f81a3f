"""Reaper: the scheduler daemon's side of the queue: reclaim lapsed leases, promote jobs
whose retry backoff is over."""

from __future__ import annotations

import random

from scheduler import keys
from scheduler.job_types import ReapCounts
from scheduler.queue_core import QueueCore


class Reaper(QueueCore):
    async def reap(self, model: str, lease_ms: int, count: int = 100,
                   result_ttl_ms: int | None = None) -> ReapCounts:
        """Reclaims entries idle longer than the lease on each priority stream; requeues
        (after a backoff, see `promote`), expires or dead-letters their jobs."""
        total = [0, 0, 0, 0]
        for level in keys.LEVELS:
            counts = await self._scripts.reap(
                keys=[keys.stream(model, level), keys.dead_letters(model), keys.delayed(model),
                      *keys.queue_keys(model)],
                args=[keys.GROUP, keys.REAPER_CONSUMER, lease_ms, count,
                      result_ttl_ms or self._result_ttl_ms, level, self._retry.backoff_ms,
                      self._retry.backoff_max_ms, random.random()])
            total = [t + int(c) for t, c in zip(total, counts, strict=True)]
        return ReapCounts(*total)

    async def promote(self, model: str, count: int = 1000) -> int:
        """Moves jobs whose retry backoff is over back to their streams; returns how many."""
        return int(await self._scripts.promote(
            keys=[keys.delayed(model), *keys.queue_keys(model)], args=[count]))
