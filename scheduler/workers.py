"""Worker liveness records: each worker refreshes its key; a missing key means a dead worker."""

from __future__ import annotations

import time
from typing import cast

import redis.asyncio as aioredis

from maas.queue.v1.queue_pb2 import WorkerHeartbeat
from scheduler import keys


class WorkerDirectory:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._cache: tuple[float, list[WorkerHeartbeat]] = (0.0, [])

    async def beat(self, heartbeat: WorkerHeartbeat, ttl_ms: int) -> None:
        heartbeat.sent_unix_ms = int(time.time() * 1000)
        await self._redis.set(keys.worker(heartbeat.worker_id), heartbeat.SerializeToString(),
                              px=ttl_ms)

    async def leave(self, worker_id: str) -> None:
        await self._redis.delete(keys.worker(worker_id))

    async def live(self, max_age_s: float = 1.0) -> list[WorkerHeartbeat]:
        """Workers whose record has not expired (cached for max_age_s)."""
        at, cached = self._cache
        if time.monotonic() - at < max_age_s:
            return cached
        names = [k async for k in self._redis.scan_iter(match=keys.workers_pattern(), count=200)]
        values = cast("list[bytes | None]", await self._redis.mget(names)) if names else []
        found = [WorkerHeartbeat.FromString(v) for v in values if v]
        self._cache = (time.monotonic(), found)
        return found
