"""The verification queue: archives (code) wait here until a worker has verified them.

The gateway adds a VerifyRequest when it registers an archive version (state VERIFYING);
workers read it in the consumer group `verifiers`, verify the archive in a sandboxed runner
and store the verdict in the version (READY or REJECTED, scheduler/registry.py). An entry a
worker took and never acknowledged (the worker died) is claimed again after
`reclaim_after_ms`; verifying twice is harmless (the verdict is the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from runtime.queue.v1.runner_pb2 import VerifyRequest
from scheduler import keys

GROUP = "verifiers"
MAXLEN = 10_000
Entries = list[tuple[bytes, dict[bytes, bytes]]]


@dataclass(frozen=True)
class VerifyTask:
    entry_id: str
    request: VerifyRequest


class VerificationQueue:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(keys.verify_stream(), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def submit(self, model: str, version: str) -> None:
        """Asks the workers to verify a version (the gateway, after storing it)."""
        request = VerifyRequest(model=model, version=version)
        await self._redis.xadd(keys.verify_stream(), {"r": request.SerializeToString()},
                               maxlen=MAXLEN, approximate=True)

    async def take(self, consumer: str, block_ms: int, reclaim_after_ms: int
                   ) -> VerifyTask | None:
        """One request: an abandoned one first, else a new one (blocking up to block_ms)."""
        _, claimed, *_ = cast("list[object]", await self._redis.xautoclaim(
            keys.verify_stream(), GROUP, consumer, min_idle_time=reclaim_after_ms, count=1))
        entries = cast("Entries", claimed)
        if not entries:
            reply = cast("list[tuple[bytes, Entries]] | None", await self._redis.xreadgroup(
                GROUP, consumer, {keys.verify_stream(): ">"}, count=1, block=block_ms))
            entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            if fields and b"r" in fields:
                return VerifyTask(entry_id.decode(), VerifyRequest.FromString(fields[b"r"]))
            await self.done(entry_id.decode())  # a deleted entry: nothing to verify
        return None

    async def done(self, entry_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(keys.verify_stream(), GROUP, entry_id)
            pipe.xdel(keys.verify_stream(), entry_id)
            await pipe.execute()
