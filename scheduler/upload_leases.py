"""Which stream writes a resumable upload right now, across gateways: a short lease in Redis.

Uploads kept in object storage (gateway/upload_sessions_s3.py) may be resumed through any
gateway, so the one-writer rule cannot be a file lock: a stream takes the upload's lease
(`keys.upload_lease`, SET NX with a random token and a TTL), renews it while it receives and
releases it at the end, both only while it still holds it (UPLOAD_LEASE). A gateway that dies
mid-stream leaves its lease to expire: the upload can be resumed `lease_s` later at most.
"""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from scheduler import keys
from scheduler.scripts import register

LEASE_S = 30.0


class UploadLeases:
    def __init__(self, client: aioredis.Redis, lease_s: float = LEASE_S) -> None:
        self._redis = client
        self.lease_s = lease_s
        self._script = register(client, "upload_lease")

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease_s * 1000))

    async def acquire(self, upload_id: str) -> str | None:
        """The token of a new lease on the upload; None while another stream holds it."""
        token = uuid.uuid4().hex
        taken = await self._redis.set(keys.upload_lease(upload_id), token, nx=True,
                                      px=self._lease_ms)
        return token if taken else None

    async def remaining_s(self, upload_id: str) -> float:
        """Seconds the current holder's lease has left (0 when there is none)."""
        ms = int(await self._redis.pttl(keys.upload_lease(upload_id)))
        return max(ms, 0) / 1000

    async def renew(self, upload_id: str, token: str) -> bool:
        """Extends the lease by `lease_s`; False when it was lost (expired, taken)."""
        return bool(await self._script(keys=[keys.upload_lease(upload_id)],
                                       args=[token, self._lease_ms]))

    async def release(self, upload_id: str, token: str) -> None:
        await self._script(keys=[keys.upload_lease(upload_id)], args=[token, 0])
