"""The scheduler daemon: reclaims expired leases of every model's stream, on a period, and
puts jobs whose retry backoff is over back in their streams; every SWEEP_PERIOD_S it deletes
the weights and archives no version references (scheduler/artifact_gc.py).

Each pass reads every model's stream statistics first (one pipeline) and runs REAP only
where entries are leased and PROMOTE only where jobs wait out a backoff: an idle cluster
costs one round trip per model and pass. Safe to run twice at once: REAP is one atomic
script per stream, so two daemons only split the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from maas.errors import Unavailable
from runtime import metrics
from runtime.artifacts import artifact_store
from runtime.settings import Settings
from scheduler import keys
from scheduler.artifact_gc import SWEEP_PERIOD_S, ArtifactCollector
from scheduler.connection import TRANSIENT_ERRORS, check_server, connect
from scheduler.queue import JobQueue, ReapCounts, retry_policy
from scheduler.registry import ModelRegistry
from scheduler.shards import Shards
from scheduler.stats import QueueGauges, observe_stream, stream_stats, training_replicas

log = logging.getLogger(__name__)

NOTHING_REAPED = ReapCounts(0, 0, 0, 0)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._redis = connect(settings.redis_url, max_connections=4)
        self.queue = JobQueue(self._redis,
                              result_ttl_ms=int(settings.infer_result_ttl_s * 1000),
                              retry=retry_policy(settings),
                              shards=Shards(settings.model_shard_counts))
        self._registry = ModelRegistry(self._redis)
        self.collector = ArtifactCollector(self._redis, artifact_store(settings))
        self._swept_at = float("-inf")  # monotonic s of the last sweep
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def reap_once(self) -> int:
        """One pass over every model's queues (a sharded model has several:
        scheduler/shards.py); returns how many entries it reclaimed."""
        total = 0
        infer_ttl_ms = int(self.settings.infer_result_ttl_s * 1000)
        queues = [(q, self.settings.infer_lease_ms, infer_ttl_ms)
                  for q in self.queue.shards.expand(await self._registry.model_names())]
        queues.append((keys.TRAINING_QUEUE, self.settings.train_lease_ms,
                       int(self.settings.result_ttl_s * 1000)))
        gauges = QueueGauges(self.settings.max_batch_size, self.settings.pooled_model_names)
        for queue, lease_ms, ttl_ms in queues:
            stats = await stream_stats(self._redis, queue)
            if not stats.has_groups:  # a new model (or a Redis that lost its data)
                await self.queue.ensure_group(queue)
            counts = NOTHING_REAPED
            if stats.leased_all_levels:
                counts = await self.queue.reap(queue, lease_ms, result_ttl_ms=ttl_ms)
            promoted = await self.queue.promote(queue) if stats.delayed else 0
            moved = counts.requeued + counts.expired + counts.dead + counts.dropped
            if moved or promoted:  # the gauges show the streams after this pass
                stats = await stream_stats(self._redis, queue)
            observe_stream(keys.model_of_queue(queue), counts, stats, gauges)
            if moved:
                log.info("reaped %s: requeued %d, expired %d, dead-lettered %d, dropped %d",
                         queue, counts.requeued, counts.expired, counts.dead, counts.dropped)
            total += moved
        gauges.training_workers = await training_replicas(self._redis)
        gauges.export()
        return total

    async def _sweep_when_due(self) -> None:
        if time.monotonic() - self._swept_at < SWEEP_PERIOD_S:
            return
        self._swept_at = time.monotonic()  # a failed sweep waits for the next period too
        deleted = await self.collector.sweep()
        if deleted:
            log.info("deleted %d unreferenced artifacts", deleted)

    async def run(self) -> None:
        period_s = self.settings.reaper_interval_ms / 1000
        log.info("scheduler daemon: reaping every %.2fs, lease %d ms", period_s,
                 self.settings.infer_lease_ms)
        await check_server(self._redis)
        try:
            while not self._stopping.is_set():
                try:
                    await self.reap_once()
                    await self._sweep_when_due()
                except TRANSIENT_ERRORS as exc:
                    metrics.REDIS_ERRORS.labels("scheduler").inc()
                    log.warning("Redis unreachable: %s", exc)
                except Unavailable as exc:  # the object store
                    log.warning("artifact garbage collection: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), period_s)
        finally:
            await self._redis.aclose()
