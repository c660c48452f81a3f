"""QueueCore: what every role of the queue shares: the Redis client and the one set of scripts.

A job hash is the source of truth of a job that has one; a stream entry carries the job id
(and, for a lean job, the envelope: see "Lean jobs" in lua/common.lua). A lease is the
entry's pending-list ownership, renewed by the worker's heartbeat (EXTEND) and reclaimed by
the scheduler daemon (REAP) once idle longer than the lease. Every state change is one
script call (one round trip), fenced on the entry's owner. docs/queue-protocol.md has the
state machine.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from scheduler.job_types import RetryPolicy, TenantPolicy
from scheduler.replica_wait import ReplicaWait
from scheduler.scripts import Scripts
from scheduler.shards import Shards
from scheduler.slot_reads import SlotReads


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class QueueCore:
    """The client, the scripts and the policies every role uses."""

    def __init__(self, client: aioredis.Redis, *, result_ttl_ms: int = 3_600_000,
                 max_depth: int = 0, tenants: TenantPolicy | None = None,
                 retry: RetryPolicy | None = None, wait_replicas: int = 0,
                 wait_timeout_ms: int = 1000, shards: Shards | None = None) -> None:
        self._redis = client
        self._scripts = Scripts.register(client)
        self._result_ttl_ms = result_ttl_ms
        self._max_depth = max_depth  # most entries per priority stream; 0 = no limit
        self.tenants = tenants or TenantPolicy()
        self.shards = shards or Shards()  # MAAS_MODEL_SHARDS
        self._retry = retry or RetryPolicy()
        self._slot_reads = SlotReads()  # a consumer's reads on a Redis Cluster
        # Submits acknowledged once this many replicas have them (MAAS_REDIS_WAIT_REPLICAS).
        self._replica_wait = (ReplicaWait(client, wait_replicas, wait_timeout_ms)
                              if wait_replicas > 0 else None)

    async def aclose(self) -> None:
        """Closes what the queue opened besides the shared client (MAAS_REDIS_WAIT_REPLICAS'
        connections to each primary)."""
        if self._replica_wait is not None:
            await self._replica_wait.close()

    @property
    def scripts(self) -> Scripts:
        return self._scripts

    @property
    def client(self) -> aioredis.Redis:
        """The Redis client the scripts are registered on (readers share it)."""
        return self._redis
