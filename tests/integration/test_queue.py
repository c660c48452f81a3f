"""The queue's guarantees, directly against a real redis-server: idempotent submit, fencing,
lease renewal, reaping, dead letters and deadlines."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from maas.errors import IdempotencyKeyReused
from runtime.queue.v1.queue_pb2 import InferTask, JobEnvelope, JobKind, JobResult, JobState
from scheduler import keys
from scheduler.queue import Delivery, JobQueue, RetryPolicy, SubmitStatus, new_job_id
from scheduler.replies import ReplyStream

MODEL = "m1"
LEASE_MS = 200


@pytest.fixture
def client(any_redis_client: aioredis.Redis) -> aioredis.Redis:
    """Every test here runs on a plain Redis and on a slot-checked Redis Cluster (#15)."""
    return any_redis_client


@pytest.fixture
async def queue(client: aioredis.Redis) -> JobQueue:
    q = JobQueue(client, result_ttl_ms=60_000, retry=RetryPolicy(backoff_ms=0, backoff_max_ms=0))
    await q.ensure_group(MODEL)
    return q


def envelope(*, key: str = "", body: str = "a", deadline_ms: int = 0, max_attempts: int = 3,
             reply_to: str = "", priority: int = 0) -> JobEnvelope:
    return JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER, model=MODEL,
                       model_version="1", idempotency_key=key, reply_to=reply_to,
                       priority=priority,
                       deadline_unix_ms=deadline_ms, max_attempts=max_attempts,
                       infer=InferTask(request_id=body))


def succeeded(d: Delivery) -> JobResult:
    return JobResult(job_id=d.job_id, state=JobState.JOB_STATE_SUCCEEDED)


async def take(queue: JobQueue, consumer: str, count: int = 10) -> list[Delivery]:
    await queue.promote(MODEL)  # reaped jobs are due at once (backoff 0)
    return await queue.read(consumer, [MODEL], count, block_ms=None)


async def test_submit_is_idempotent_per_key(queue: JobQueue) -> None:
    first = envelope(key="req-1")
    assert await queue.submit(first) == (SubmitStatus.CREATED, first.job_id)
    again = envelope(key="req-1")
    assert await queue.submit(again) == (SubmitStatus.EXISTS, first.job_id)
    changed = envelope(key="req-1", body="b")
    with pytest.raises(IdempotencyKeyReused, match=f"different request \\(job {first.job_id}\\)"):
        await queue.submit(changed)
    # Only one job was queued.
    assert len(await take(queue, "w1")) == 1


async def test_full_cycle_replies_once(queue: JobQueue, client: aioredis.Redis) -> None:
    replies = ReplyStream(client, "gw-1", MODEL)
    job = envelope(reply_to=replies.key)
    await queue.submit(job)
    [delivery] = await take(queue, "w1")
    started = await queue.start("w1", [delivery])
    assert [s.envelope.job_id for s in started.runnable] == [job.job_id]
    assert started.runnable[0].attempt == 1
    assert await queue.complete("w1", [(delivery, succeeded(delivery))]) == [True]
    # A second completion of the same job is rejected: one visible result.
    assert await queue.complete("w1", [(delivery, succeeded(delivery))]) == [False]
    got = await replies.read(block_ms=100)
    assert [(r.job_id, r.result.state) for r in got] == [(job.job_id,
                                                          JobState.JOB_STATE_SUCCEEDED)]
    state = await queue.job_state(MODEL, job.job_id)
    assert state["state"] == b"SUCCEEDED" and b"env" not in state
    assert await client.xlen(keys.stream(MODEL)) == 0


async def test_worker_that_lost_its_lease_cannot_complete(queue: JobQueue) -> None:
    """Fencing: once the reaper reclaims an entry, the old owner's completion is dropped."""
    job = envelope()
    await queue.submit(job)
    [stale] = await take(queue, "zombie")
    await queue.start("zombie", [stale])
    await asyncio.sleep(LEASE_MS * 1.5 / 1000)
    counts = await queue.reap(MODEL, LEASE_MS)
    assert counts.requeued == 1
    assert await queue.extend("zombie", [stale]) == [stale]
    assert await queue.complete("zombie", [(stale, succeeded(stale))]) == [False]
    # The job runs again elsewhere, as attempt 2, and that completion counts.
    [fresh] = await take(queue, "w2")
    assert fresh.job_id == job.job_id and fresh.entry_id != stale.entry_id
    started = await queue.start("w2", [fresh])
    assert started.runnable[0].attempt == 2
    assert await queue.complete("w2", [(fresh, succeeded(fresh))]) == [True]
    assert (await queue.job_state(MODEL, job.job_id))["state"] == b"SUCCEEDED"


async def test_heartbeat_keeps_the_lease(queue: JobQueue) -> None:
    await queue.submit(envelope())
    [d] = await take(queue, "w1")
    await queue.start("w1", [d])
    for _ in range(4):
        await asyncio.sleep(LEASE_MS / 2 / 1000)
        assert await queue.extend("w1", [d]) == []
        assert (await queue.reap(MODEL, LEASE_MS)).requeued == 0
    assert await queue.complete("w1", [(d, succeeded(d))]) == [True]


async def test_a_reclaimed_delivery_cannot_start(queue: JobQueue) -> None:
    """A worker too slow to start what it read finds the entry requeued under a new id."""
    job = envelope()
    await queue.submit(job)
    [slow] = await take(queue, "w1")
    await asyncio.sleep(LEASE_MS * 1.5 / 1000)
    assert (await queue.reap(MODEL, LEASE_MS)).requeued == 1
    outcome = await queue.start("w1", [slow])
    assert outcome.runnable == [] and outcome.skipped == 1
    [fresh] = await take(queue, "w2")
    assert (await queue.start("w2", [fresh])).runnable[0].attempt == 1


async def test_dead_letter_after_max_attempts(queue: JobQueue, client: aioredis.Redis) -> None:
    replies = ReplyStream(client, "gw-dlq", MODEL)
    job = envelope(max_attempts=2, reply_to=replies.key)
    await queue.submit(job)
    for attempt in (1, 2):  # each attempt's worker dies: the lease expires
        [d] = await take(queue, f"w{attempt}")
        assert (await queue.start(f"w{attempt}", [d])).runnable[0].attempt == attempt
        await asyncio.sleep(LEASE_MS * 1.5 / 1000)
        counts = await queue.reap(MODEL, LEASE_MS)
    assert counts.dead == 1 and counts.requeued == 0
    state = await queue.job_state(MODEL, job.job_id)
    assert state["state"] == b"DEAD_LETTERED" and state["attempt"] == b"2"
    dead = await client.xrange(keys.dead_letters(MODEL))
    assert [f[b"job"].decode() for _, f in dead] == [job.job_id]
    [reply] = await replies.read(block_ms=100)
    assert reply.result.state == JobState.JOB_STATE_DEAD_LETTERED
    assert reply.result.error.reason == "DEAD_LETTERED"
    assert await take(queue, "w3") == []


async def test_job_past_its_deadline_never_runs(queue: JobQueue, client: aioredis.Redis) -> None:
    replies = ReplyStream(client, "gw-exp", MODEL)
    job = envelope(deadline_ms=int(time.time() * 1000) + 50, reply_to=replies.key)
    await queue.submit(job)
    await asyncio.sleep(0.1)
    [d] = await take(queue, "w1")
    outcome = await queue.start("w1", [d])
    assert outcome.runnable == [] and outcome.expired == 1
    state = await queue.job_state(MODEL, job.job_id)
    assert state["state"] == b"EXPIRED" and state["attempt"] == b"0"
    [reply] = await replies.read(block_ms=100)
    assert reply.result.error.code == "DEADLINE_EXCEEDED"


async def test_reaper_expires_a_reclaimed_job_past_its_deadline(queue: JobQueue) -> None:
    job = envelope(deadline_ms=int(time.time() * 1000) + 100)
    await queue.submit(job)
    [d] = await take(queue, "w1")
    await queue.start("w1", [d])
    await asyncio.sleep(0.3)
    assert (await queue.reap(MODEL, LEASE_MS)).expired == 1
    assert (await queue.job_state(MODEL, job.job_id))["state"] == b"EXPIRED"


async def test_batch_start_and_complete(queue: JobQueue) -> None:
    jobs = [envelope() for _ in range(5)]
    for j in jobs:
        await queue.submit(j)
    deliveries = await take(queue, "w1", count=32)
    assert len(deliveries) == 5
    started = await queue.start("w1", deliveries)
    assert len(started.runnable) == 5
    recorded = await queue.complete("w1", [(s.delivery, succeeded(s.delivery))
                                           for s in started.runnable])
    assert recorded == [True] * 5


async def test_two_reapers_at_once_do_no_harm(queue: JobQueue, client: aioredis.Redis) -> None:
    for _ in range(20):
        await queue.submit(envelope())
    ds = await take(queue, "dead-worker", count=20)
    await queue.start("dead-worker", ds)
    await asyncio.sleep(LEASE_MS * 1.5 / 1000)
    other = JobQueue(client)
    a, b = await asyncio.gather(queue.reap(MODEL, LEASE_MS), other.reap(MODEL, LEASE_MS))
    assert a.requeued + b.requeued == 20
    assert len(await take(queue, "w2", count=50)) == 20


async def test_a_redis_that_may_evict_is_refused(client: aioredis.Redis) -> None:
    from scheduler.connection import EvictingRedis, check_durability

    await check_durability(client)  # the fixture's server runs noeviction
    await client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(EvictingRedis, match="noeviction"):
            await check_durability(client)
    finally:
        await client.config_set("maxmemory-policy", "noeviction")


async def test_a_cancelled_queued_job_never_runs(queue: JobQueue) -> None:
    job = envelope()
    await queue.submit(job)
    assert await queue.cancel_queued(MODEL, job.job_id) is True
    [d] = await take(queue, "w1")
    outcome = await queue.start("w1", [d])
    assert outcome.runnable == [] and outcome.skipped == 1
    state = await queue.job_state(MODEL, job.job_id)
    assert state["state"] == b"CANCELLED" and state["attempt"] == b"0"


async def test_a_running_job_is_not_cancelled_behind_the_workers_back(queue: JobQueue) -> None:
    job = envelope()
    await queue.submit(job)
    [d] = await take(queue, "w1")
    await queue.start("w1", [d])
    assert await queue.cancel_queued(MODEL, job.job_id) is False
    assert await queue.complete("w1", [(d, succeeded(d))]) == [True]


async def test_cancel_while_running_discards_the_result(queue: JobQueue) -> None:
    job = envelope()
    await queue.submit(job)
    [d] = await take(queue, "w1")
    await queue.start("w1", [d])
    assert await queue.cancel(MODEL, job.job_id) is True
    assert await queue.complete("w1", [(d, succeeded(d))]) == [True]
    state = await queue.job_state(MODEL, job.job_id)
    assert state["state"] == b"CANCELLED" and state["result"] == b""
    assert await queue.cancel(MODEL, job.job_id) is False  # done: nothing left to cancel


async def test_per_job_result_ttl(queue: JobQueue, client: aioredis.Redis) -> None:
    job = envelope()
    job.result_ttl_ms = 5_000_000
    await queue.submit(job)
    [d] = await take(queue, "w1")
    await queue.start("w1", [d])
    await queue.complete("w1", [(d, succeeded(d))])
    assert await client.pttl(keys.job(MODEL, job.job_id)) > 4_000_000


async def test_dead_letters_can_be_listed_and_redriven(queue: JobQueue) -> None:
    job = envelope(max_attempts=1)
    await queue.submit(job)
    [d] = await take(queue, "w1")
    await queue.start("w1", [d])
    await asyncio.sleep(LEASE_MS * 1.5 / 1000)
    assert (await queue.reap(MODEL, LEASE_MS)).dead == 1
    [letter] = await queue.dead_letters(MODEL)
    assert letter.job_id == job.job_id and letter.attempts == 1 and letter.redrivable
    assert await queue.redrive(MODEL) == [job.job_id]
    assert await queue.dead_letters(MODEL) == []
    [again] = await take(queue, "w2")
    started = await queue.start("w2", [again])
    assert started.runnable[0].attempt == 1  # fresh attempts
    assert await queue.complete("w2", [(again, succeeded(again))]) == [True]
    assert await queue.redrive(MODEL, [job.job_id]) == []  # not dead any more


async def test_priorities_serve_high_first_without_starving_low(queue: JobQueue) -> None:
    for _ in range(20):
        await queue.submit(envelope(priority=3))  # low, queued first
    for _ in range(60):
        await queue.submit(envelope(priority=1))  # high
    small = await queue.claim("w1", MODEL, 2)
    assert [s.delivery.level for s in small.runnable] == ["high", "high"]
    batch = await queue.claim("w1", MODEL, 32)
    levels = [s.delivery.level for s in batch.runnable]
    # A flood of high-priority work still leaves low a share of each batch (count / 8).
    assert levels.count("high") == 28 and levels.count("low") == 4
    recorded = await queue.complete("w1", [(s.delivery, succeeded(s.delivery))
                                           for s in [*small.runnable, *batch.runnable]])
    assert all(recorded)
    # Reaping and the blocking read see every priority stream.
    more = await take(queue, "w2", count=100)
    assert {d.level for d in more} == {"high", "low"} and len(more) == 46
    await asyncio.sleep(LEASE_MS * 1.5 / 1000)
    assert (await queue.reap(MODEL, LEASE_MS)).requeued == 46
