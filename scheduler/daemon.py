"""The scheduler daemon: reclaims expired leases of every model's stream, on a period, and
puts jobs whose retry backoff is over back in their streams.

Safe to run twice at once: REAP is one atomic script per stream, so two daemons only
split the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from maas import metrics
from maas.settings import Settings
from scheduler import keys
from scheduler.connection import TRANSIENT_ERRORS, check_durability, connect
from scheduler.queue import JobQueue, retry_policy
from scheduler.registry import ModelRegistry
from scheduler.stats import QueueGauges, observe_stream, stream_stats

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._redis = connect(settings.redis_url, max_connections=4)
        self.queue = JobQueue(self._redis,
                              result_ttl_ms=int(settings.infer_result_ttl_s * 1000),
                              retry=retry_policy(settings))
        self._registry = ModelRegistry(self._redis)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def reap_once(self) -> int:
        """One pass over every model; returns how many entries it reclaimed."""
        total = 0
        infer_ttl_ms = int(self.settings.infer_result_ttl_s * 1000)
        queues = [(m, self.settings.infer_lease_ms, infer_ttl_ms)
                  for m in await self._registry.model_names()]
        queues.append((keys.TRAINING_QUEUE, self.settings.train_lease_ms,
                       int(self.settings.result_ttl_s * 1000)))
        gauges = QueueGauges()
        for model, lease_ms, ttl_ms in queues:
            await self.queue.ensure_group(model)
            counts = await self.queue.reap(model, lease_ms, result_ttl_ms=ttl_ms)
            await self.queue.promote(model)
            observe_stream(model, counts, await stream_stats(self._redis, model), gauges)
            moved = counts.requeued + counts.expired + counts.dead + counts.dropped
            if moved:
                log.info("reaped %s: requeued %d, expired %d, dead-lettered %d, dropped %d",
                         model, counts.requeued, counts.expired, counts.dead, counts.dropped)
            total += moved
        gauges.export()
        return total

    async def run(self) -> None:
        period_s = self.settings.reaper_interval_ms / 1000
        log.info("scheduler daemon: reaping every %.2fs, lease %d ms", period_s,
                 self.settings.infer_lease_ms)
        await check_durability(self._redis)
        try:
            while not self._stopping.is_set():
                try:
                    await self.reap_once()
                except TRANSIENT_ERRORS as exc:
                    metrics.REDIS_ERRORS.labels("scheduler").inc()
                    log.warning("Redis unreachable: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), period_s)
        finally:
            await self._redis.aclose()
