"""Worker liveness records: each worker refreshes its key; a missing key means a dead worker.

An index (a sorted set of worker id → when its record expires) lists them, so finding the
live workers never SCANs the keyspace (which holds every job hash).

What a record says decides where a model can run: `serves` (its MAAS_WORKER_MODELS pins) and
`fits_any` (a budget, MAAS_WORKER_MODEL_MEMORY_MB, with room for the version's weights).
Gateway and workers decide alike: the gateway refuses what no live worker fits, a worker
hands a job it cannot hold to one that can."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import cast

import redis.asyncio as aioredis

from maas.v1.model_service_pb2 import ModelVersion
from runtime.queue.v1.queue_pb2 import WorkerHeartbeat
from scheduler import keys
from scheduler.model_states import is_archive

FORGET_MS = 60_000  # how long a lapsed worker stays in the index


def serves(pins: Sequence[str], model: str) -> bool:
    """Whether a worker pinned to `pins` (MAAS_WORKER_MODELS; empty: every model) serves the
    model with this id: a pin is an id (`<tenant>/<name>`), or a name, which takes the shared
    model and every tenant's model of that name. Pins that all start with `!` name the
    models it does not serve (every other model it does)."""
    excluded = [p[1:] for p in pins if p.startswith("!")]
    if excluded:
        return not names(excluded, model)
    return not pins or names(pins, model)


def names(listed: Sequence[str], model: str) -> bool:
    """Whether `listed` (model ids or names) names the model with this id."""
    return model in listed or keys.split_model_id(model)[1] in listed


def cached_bytes(version: ModelVersion) -> int:
    """The bytes a version's weights take in a worker's model cache, as registered (the
    safetensors file's size); 0 when unknown, and for an archive, which runs in a sandboxed
    runner (within MAAS_RUNNER_MEMORY_MB), not in the cache."""
    return 0 if is_archive(version) else version.weights_bytes


def fits(budget_bytes: int, size_bytes: int) -> bool:
    """Whether weights of `size_bytes` (0: unknown) fit a model memory budget (0: none)."""
    return not budget_bytes or size_bytes <= budget_bytes


def fits_any(workers: Sequence[WorkerHeartbeat], model: str, size_bytes: int) -> bool:
    """Whether one of `workers` serves the model and has the model memory for its weights."""
    return any(serves(w.serves, model) and fits(w.model_memory_budget_bytes, size_bytes)
               for w in workers)


class WorkerDirectory:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._cache: tuple[float, list[WorkerHeartbeat]] = (-1e9, [])
        self._refreshing = asyncio.Lock()
        self._seen: tuple[float, bool] = (-1e9, False)

    async def beat(self, heartbeat: WorkerHeartbeat, ttl_ms: int) -> None:
        heartbeat.sent_unix_ms = int(time.time() * 1000)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(keys.worker(heartbeat.worker_id), heartbeat.SerializeToString(), px=ttl_ms)
        pipe.zadd(keys.workers_index(), {heartbeat.worker_id: heartbeat.sent_unix_ms + ttl_ms})
        await pipe.execute()

    async def leave(self, worker_id: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(keys.worker(worker_id))
        pipe.zrem(keys.workers_index(), worker_id)
        await pipe.execute()

    async def live(self, max_age_s: float = 1.0) -> list[WorkerHeartbeat]:
        """Workers whose record has not expired (cached for max_age_s; one refresh at a
        time, however many callers find the cache stale at once)."""
        if time.monotonic() - self._cache[0] < max_age_s:
            return self._cache[1]
        asked = time.monotonic()
        async with self._refreshing:
            if self._cache[0] >= asked:  # refreshed by another caller while this one waited
                return self._cache[1]
            found = await self._read()
            self._cache = (time.monotonic(), found)
            return found

    async def any_seen(self, within_s: float, max_age_s: float = 1.0) -> bool:
        """Whether any worker's record was live within the last `within_s` (cached). Lenient
        on purpose: after a Redis outage every record may have lapsed, yet the workers are
        there and beat again within a heartbeat period."""
        if time.monotonic() - self._seen[0] < max_age_s:
            return self._seen[1]
        since_ms = int(time.time() * 1000 - within_s * 1000)
        seen = bool(await self._redis.zcount(keys.workers_index(), since_ms, "+inf"))
        self._seen = (time.monotonic(), seen)
        return seen

    async def _read(self) -> list[WorkerHeartbeat]:
        now_ms = int(time.time() * 1000)
        index = keys.workers_index()
        # Records gone for a minute leave the index; the recently gone stay for any_seen.
        await self._redis.zremrangebyscore(index, "-inf", now_ms - FORGET_MS)
        ids = cast("list[bytes]", await self._redis.zrangebyscore(index, now_ms, "+inf"))
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)  # not MGET: a cluster has them apart
        for worker_id in ids:
            pipe.get(keys.worker(worker_id.decode()))
        values = cast("list[bytes | None]", await pipe.execute())
        return [WorkerHeartbeat.FromString(v) for v in values if v]
