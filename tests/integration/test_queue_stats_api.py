"""A model's queue statistics for the public API (scheduler/queue_stats.py), against real
streams on a real redis-server: jobs at the three priorities, some leased, one tenant over its
fair share, one dead letter; exact counts, and a delivery counter that only grows."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from runtime.queue.v1.queue_pb2 import InferTask, JobEnvelope, JobKind
from scheduler.job_types import TenantPolicy
from scheduler.queue import JobQueue, new_job_id
from scheduler.queue_stats import read_queue_stats

MODEL = "acme/stats"
PRIORITY = {"high": 1, "normal": 0, "low": 3}  # v2 priority of each level
LEASE_MS = 100


@pytest.fixture
def client(any_redis_client: aioredis.Redis) -> aioredis.Redis:
    """Each test on a plain Redis and on a Redis Cluster (one pipeline, one slot)."""
    return any_redis_client


def job(tenant: str, level: str, max_attempts: int = 3) -> JobEnvelope:
    return JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER, model=MODEL,
                       model_version="1", tenant=tenant, priority=PRIORITY[level],
                       max_attempts=max_attempts, infer=InferTask())


async def test_an_empty_queue_reads_zero(client: aioredis.Redis) -> None:
    stats = await read_queue_stats(client, "never-queued", "acme")  # no stream, no group
    assert [(s.level, s.waiting, s.leased, s.oldest_age_s, s.delivered_total)
            for s in stats.levels] == [(lv, 0, 0, 0.0, 0) for lv in ("high", "normal", "low")]
    assert (stats.dead_letters, stats.delayed) == (0, 0)


async def test_counts_by_priority_leases_backlog_and_deliveries(client: aioredis.Redis) -> None:
    queue = JobQueue(client, result_ttl_ms=60_000, tenants=TenantPolicy(share_slots=2))
    await queue.ensure_group(MODEL)
    for level, count in (("low", 1), ("high", 3), ("normal", 2)):
        for _ in range(count):
            await queue.submit(job("acme", level))
    await asyncio.sleep(0.05)
    # acme holds 2 stream entries at most (fair share): the rest wait in its backlog.
    before = await read_queue_stats(client, MODEL, "acme")
    assert [(s.waiting, s.leased, s.tenant_backlog) for s in before.levels] == [
        (1, 0, 2), (0, 0, 2), (1, 0, 0)]
    assert before.levels[2].oldest_age_s >= 0.04 and before.levels[1].oldest_age_s == 0.0
    assert [s.tenant_backlog for s in (await read_queue_stats(client, MODEL, "globex")).levels
            ] == [0, 0, 0], "another tenant's backlog is not the asker's"

    leased = (await queue.claim("w1", MODEL, 2)).runnable  # high first, then the refill
    assert len(leased) == 2
    after = await read_queue_stats(client, MODEL, "acme")
    assert sum(s.leased for s in after.levels) == 2 and after.leased == 2
    assert after.waiting + sum(s.tenant_backlog for s in after.levels) == 4
    delivered = [s.delivered_total for s in after.levels]
    assert sum(delivered) - sum(s.delivered_total for s in before.levels) == 2
    assert len((await queue.claim("w2", MODEL, 8)).runnable) == 4  # the backlog refills
    later = await read_queue_stats(client, MODEL, "acme")
    assert (later.waiting, later.leased) == (0, 6)
    assert sum(s.tenant_backlog for s in later.levels) == 0
    assert sum(s.delivered_total for s in later.levels) - sum(delivered) == 4


async def test_dead_letters_are_counted(client: aioredis.Redis) -> None:
    queue = JobQueue(client, result_ttl_ms=60_000)
    await queue.ensure_group(MODEL)
    await queue.submit(job("acme", "normal", max_attempts=1))
    [started] = (await queue.claim("w1", MODEL, 1)).runnable
    assert started.attempt == 1
    await asyncio.sleep(LEASE_MS * 1.5 / 1000)  # its worker died: the lease lapses
    assert (await queue.reap(MODEL, LEASE_MS)).dead == 1
    stats = await read_queue_stats(client, MODEL, "acme")
    assert (stats.dead_letters, stats.waiting, stats.leased) == (1, 0, 0)
    assert stats.levels[1].delivered_total == 1
