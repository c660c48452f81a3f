"""Queue depth and oldest-job age cover every priority stream (keys.LEVELS), against a real
redis-server: a backlog of high or low jobs must show on the gauges and wake the reaper."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from runtime.queue.v1.queue_pb2 import JobEnvelope, JobKind
from scheduler import keys
from scheduler.connection import connect
from scheduler.queue import JobQueue, new_job_id
from scheduler.stats import stream_stats

MODEL = "stats-priorities"
PRIORITIES = {"high": 1, "normal": 0, "low": 3}  # v2 priority of each level


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = connect(redis_url)
    yield c
    await c.aclose()


async def submit(queue: JobQueue, priority: int) -> None:
    await queue.submit(JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER,
                                   model=MODEL, model_version="1", max_attempts=3,
                                   priority=priority))


@pytest.mark.parametrize("level", keys.LEVELS)
async def test_jobs_of_one_priority_count_alone(client: aioredis.Redis, level: str) -> None:
    model_level = f"{MODEL}-{level}"
    queue = JobQueue(client, result_ttl_ms=60_000)
    await queue.ensure_group(model_level)
    for _ in range(2):
        await queue.submit(JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER,
                                       model=model_level, model_version="1", max_attempts=3,
                                       priority=PRIORITIES[level]))
    await asyncio.sleep(0.05)
    assert await client.xlen(keys.stream(model_level, level)) == 2  # the job went there
    stats = await stream_stats(client, model_level)
    assert (stats.queued, stats.leased, stats.depth) == (2, 0, 2), level
    assert stats.oldest_age_s >= 0.04, level


async def test_every_priority_counts_in_depth_age_and_leases(client: aioredis.Redis) -> None:
    queue = JobQueue(client, result_ttl_ms=60_000)
    await queue.ensure_group(MODEL)
    await submit(queue, PRIORITIES["low"])  # the oldest job waits on the low stream
    await asyncio.sleep(0.2)
    for level in ("high", "normal", "low"):
        for _ in range(2):
            await submit(queue, PRIORITIES[level])
    stats = await stream_stats(client, MODEL)
    assert (stats.queued, stats.leased, stats.depth) == (7, 0, 7)
    assert stats.oldest_age_s >= 0.2, "the low stream's oldest job sets the age"
    leased = (await queue.claim("w1", MODEL, 4)).runnable
    assert len(leased) == 4
    stats = await stream_stats(client, MODEL)
    assert (stats.queued, stats.leased, stats.depth) == (3, 4, 7)
    assert stats.leased_all_levels == 4 and stats.has_groups
