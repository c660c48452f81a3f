"""The worker's training slot: one leased training job at a time, run to an end.

A gang that is forming comes first (its job was read already, by its rank 0); else the
slot blocks on the training queue. The job itself runs in a subprocess (worker/trainer.py).
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from runtime import metrics
from runtime.artifacts import ArtifactStore
from runtime.settings import Settings
from scheduler import keys
from scheduler.connection import TRANSIENT_ERRORS
from scheduler.datasets import DatasetStore
from scheduler.gangs import GangStore
from scheduler.queue import Delivery, JobQueue
from scheduler.registry import ModelRegistry
from scheduler.training import TrainingStore
from worker.trainer import TrainingExecutor

log = logging.getLogger(__name__)


class TrainingSlot:
    def __init__(self, worker_id: str, settings: Settings, client: aioredis.Redis,
                 queue: JobQueue, registry: ModelRegistry, artifacts: ArtifactStore,
                 held: set[Delivery]) -> None:
        self._id = worker_id
        self._queue = queue
        self._held = held  # the worker's heartbeat renews the leases of these entries
        self._gangs = GangStore(client, timeout_s=settings.train_gang_timeout_s,
                                lease_ms=settings.train_lease_ms,
                                result_ttl_ms=int(settings.result_ttl_s * 1000))
        self._trainer = TrainingExecutor(
            worker_id, queue, TrainingStore(client, queue), registry, DatasetStore(client),
            artifacts, max(settings.torch_threads, 1), self._gangs)

    async def run(self, stopping: asyncio.Event) -> None:
        """Leases one training job at a time and runs it to an end (or hands it back),
        until `stopping` is set: the job in hand is checkpointed and handed back."""
        await self._queue.ensure_group(keys.TRAINING_QUEUE)
        while not stopping.is_set():
            try:
                seat = await self._gangs.join(self._id)
                if seat is not None:
                    await self._trainer.follow(seat, stopping)
                    continue
                deliveries = await self._queue.read(self._id, [keys.TRAINING_QUEUE], 1,
                                                    block_ms=500)
                if not deliveries:
                    continue
                self._held.update(deliveries)
                try:
                    for delivery in deliveries:
                        await self._trainer.take(delivery, stopping)
                finally:
                    self._held.difference_update(deliveries)
            except TRANSIENT_ERRORS as exc:
                metrics.REDIS_ERRORS.labels("worker").inc()
                log.warning("training queue unreachable: %s", exc)
                await asyncio.sleep(1.0)
