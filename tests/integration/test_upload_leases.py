"""The lease of the one stream writing a resumable upload (scheduler/upload_leases.py) against
a real redis-server: one holder at a time; only the holder renews or releases it; a holder
that stops renewing loses it when it expires, and then cannot renew it back."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from scheduler.upload_leases import UploadLeases

UPLOAD = "0f" * 16


async def test_one_holder_at_a_time_and_only_it_releases(client: aioredis.Redis) -> None:
    leases = UploadLeases(client)
    token = await leases.acquire(UPLOAD)
    assert token is not None
    assert await leases.acquire(UPLOAD) is None
    assert 0 < await leases.remaining_s(UPLOAD) <= leases.lease_s
    assert not await leases.renew(UPLOAD, "not-the-holder")
    await leases.release(UPLOAD, "not-the-holder")
    assert await leases.acquire(UPLOAD) is None  # still held
    assert await leases.renew(UPLOAD, token)
    await leases.release(UPLOAD, token)
    assert await leases.remaining_s(UPLOAD) == 0
    assert await leases.acquire(UPLOAD) is not None


async def test_a_lease_not_renewed_expires_and_stays_lost(client: aioredis.Redis) -> None:
    leases = UploadLeases(client, lease_s=0.2)
    stalled = await leases.acquire(UPLOAD)
    assert stalled is not None
    await asyncio.sleep(0.3)
    taker = await leases.acquire(UPLOAD)
    assert taker is not None
    assert not await leases.renew(UPLOAD, stalled)
    await leases.release(UPLOAD, stalled)  # leaves the new holder's lease alone
    assert await leases.renew(UPLOAD, taker)
