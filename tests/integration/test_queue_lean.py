"""Lean jobs (synchronous calls' jobs without a job hash), against a real redis-server: one
entry in, one reply out, and the same guarantees as hashed jobs where their path leaves the
lean one: fencing, reclaim with attempts counted, dead letters, deadlines, cancel, release."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from maas.errors import QueueFull
from runtime.queue.v1.queue_pb2 import InferTask, JobEnvelope, JobKind, JobResult, JobState
from scheduler import keys
from scheduler.queue import (
    Delivery,
    JobQueue,
    RetryPolicy,
    Started,
    SubmitStatus,
    TenantPolicy,
    new_job_id,
)
from scheduler.replies import ReplyStream

MODEL = "m-lean"
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


@pytest.fixture
def replies(client: aioredis.Redis) -> ReplyStream:
    return ReplyStream(client, "gw-lean", MODEL)


def envelope(replies: ReplyStream, *, deadline_ms: int = 0, max_attempts: int = 3,
             key: str = "", tenant: str = "", priority: int = 0) -> JobEnvelope:
    return JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER, model=MODEL,
                       model_version="1", reply_to=replies.key, idempotency_key=key,
                       tenant=tenant, priority=priority, deadline_unix_ms=deadline_ms,
                       max_attempts=max_attempts, infer=InferTask(request_id="r"))


def succeeded(s: Started) -> tuple[Delivery, JobResult]:
    return s.delivery, JobResult(job_id=s.delivery.job_id, attempt=s.attempt,
                                 state=JobState.JOB_STATE_SUCCEEDED)


async def submit(queue: JobQueue, *jobs: JobEnvelope) -> list[object]:
    return list(await queue.submit_many(jobs, lean=True))


async def job_hash(client: aioredis.Redis, job_id: str) -> dict[bytes, bytes]:
    return await client.hgetall(keys.job(MODEL, job_id))  # type: ignore[no-any-return]


async def test_a_lean_job_is_one_entry_in_and_one_reply_out(
        queue: JobQueue, client: aioredis.Redis, replies: ReplyStream) -> None:
    jobs = [envelope(replies) for _ in range(3)]
    assert await submit(queue, *jobs) == [(SubmitStatus.CREATED, j.job_id) for j in jobs]
    outcome = await queue.claim("w1", MODEL, 10)
    assert [(s.delivery.job_id, s.attempt) for s in outcome.runnable] == [
        (j.job_id, 1) for j in jobs]
    assert all(s.delivery.reply_to == replies.key for s in outcome.runnable)
    assert await queue.complete("w1", [succeeded(s) for s in outcome.runnable]) == [True] * 3
    # Completed twice: the fence (the entry left the pending list) drops the second.
    assert await queue.complete("w1", [succeeded(outcome.runnable[0])]) == [False]
    got = await replies.read(block_ms=100)
    assert sorted(r.job_id for r in got) == sorted(j.job_id for j in jobs)
    assert {r.result.state for r in got} == {JobState.JOB_STATE_SUCCEEDED}
    for j in jobs:  # nothing but the entry and the reply was written
        assert await job_hash(client, j.job_id) == {}
    assert await client.xlen(keys.stream(MODEL)) == 0


async def test_the_blocking_read_starts_lean_jobs_too(queue: JobQueue,
                                                      replies: ReplyStream) -> None:
    job = envelope(replies)
    await submit(queue, job)
    deliveries = await queue.read("w1", [MODEL], 10, block_ms=None)
    [started] = (await queue.start("w1", deliveries)).runnable
    assert started.envelope == job and started.attempt == 1
    assert await queue.complete("w1", [succeeded(started)]) == [True]


async def test_an_expired_lean_job_never_runs(queue: JobQueue, client: aioredis.Redis,
                                              replies: ReplyStream) -> None:
    job = envelope(replies, deadline_ms=int(time.time() * 1000) + 30)
    await submit(queue, job)
    await asyncio.sleep(0.08)
    outcome = await queue.claim("w1", MODEL, 10)
    assert outcome.runnable == [] and outcome.expired == 1
    [reply] = await replies.read(block_ms=100)
    assert reply.result.error.code == "DEADLINE_EXCEEDED"
    assert await client.xlen(keys.stream(MODEL)) == 0


async def test_a_lean_job_whose_worker_is_lost_runs_again_once(
        queue: JobQueue, client: aioredis.Redis, replies: ReplyStream) -> None:
    job = envelope(replies)
    await submit(queue, job)
    [first] = (await queue.claim("w1", MODEL, 10)).runnable
    await asyncio.sleep(LEASE_MS * 1.5 / 1000)
    assert (await queue.reap(MODEL, LEASE_MS)).requeued == 1
    adopted = await job_hash(client, job.job_id)
    assert adopted[b"state"] == b"QUEUED" and adopted[b"attempt"] == b"1"
    await queue.promote(MODEL)
    [second] = (await queue.claim("w2", MODEL, 10)).runnable
    assert second.attempt == 2 and second.envelope == job and second.delivery.reply_to == ""
    # The lost worker's late result is fenced off; the new one's is the only reply.
    assert await queue.complete("w1", [succeeded(first)]) == [False]
    assert await queue.complete("w2", [succeeded(second)]) == [True]
    got = await replies.read(block_ms=100)
    assert [(r.job_id, r.result.attempt) for r in got] == [(job.job_id, 2)]


async def test_a_lean_job_out_of_attempts_is_dead_lettered(
        queue: JobQueue, client: aioredis.Redis, replies: ReplyStream) -> None:
    job = envelope(replies, max_attempts=1)
    await submit(queue, job)
    await queue.claim("w1", MODEL, 10)
    await asyncio.sleep(LEASE_MS * 1.5 / 1000)
    assert (await queue.reap(MODEL, LEASE_MS)).dead == 1
    assert (await job_hash(client, job.job_id))[b"state"] == b"DEAD_LETTERED"
    [reply] = await replies.read(block_ms=100)
    assert reply.result.error.reason == "DEAD_LETTERED"
    [letter] = await queue.dead_letters(MODEL)
    assert letter.job_id == job.job_id and letter.redrivable


async def test_a_cancelled_lean_job_is_skipped(queue: JobQueue, client: aioredis.Redis,
                                               replies: ReplyStream) -> None:
    job = envelope(replies)
    await submit(queue, job)
    assert await queue.cancel_queued(MODEL, job.job_id)
    outcome = await queue.claim("w1", MODEL, 10)
    assert outcome.runnable == [] and outcome.skipped == 1
    assert await client.xlen(keys.stream(MODEL)) == 0
    assert 0 < await client.pttl(keys.job(MODEL, job.job_id)) <= 60_000  # the mark expires


async def test_a_released_lean_job_is_queued_again_with_its_attempt_refunded(
        queue: JobQueue, client: aioredis.Redis, replies: ReplyStream) -> None:
    job = envelope(replies)
    await submit(queue, job)
    [held] = (await queue.claim("w1", MODEL, 10)).runnable
    assert await queue.release("w1", held.delivery, refund=True)
    assert await queue.release("w1", held.delivery, refund=True) is False  # once
    [again] = (await queue.claim("w2", MODEL, 10)).runnable
    assert again.attempt == 1 and again.envelope == job
    assert await queue.complete("w2", [succeeded(again)]) == [True]
    assert len(await replies.read(block_ms=100)) == 1


async def test_a_full_stream_refuses_lean_jobs_and_writes_nothing(
        client: aioredis.Redis, replies: ReplyStream) -> None:
    queue = JobQueue(client, max_depth=2)
    await queue.ensure_group(MODEL)
    jobs = [envelope(replies) for _ in range(3)]
    *accepted, refused = await queue.submit_many(jobs, lean=True)
    assert accepted == [(SubmitStatus.CREATED, j.job_id) for j in jobs[:2]]
    assert isinstance(refused, QueueFull) and "(2 jobs queued" in refused.message
    assert await client.xlen(keys.stream(MODEL)) == 2


async def test_jobs_that_need_a_hash_never_go_lean(
        client: aioredis.Redis, replies: ReplyStream) -> None:
    queue = JobQueue(client, tenants=TenantPolicy(share_slots=4))
    await queue.ensure_group(MODEL)
    idempotent, shared, plain = (envelope(replies, key="k1"), envelope(replies, tenant="t1"),
                                 envelope(replies, priority=1))
    no_reply = envelope(replies)
    no_reply.reply_to = ""
    await queue.submit_many([idempotent, shared, plain, no_reply], lean=True)
    for job in (idempotent, shared, no_reply):
        assert (await job_hash(client, job.job_id))[b"state"] == b"QUEUED"
    assert await job_hash(client, plain.job_id) == {}
    assert await client.xlen(keys.stream(MODEL, "high")) == 1  # its priority's stream


async def test_lean_submits_survive_a_script_flush(queue: JobQueue, client: aioredis.Redis,
                                                   replies: ReplyStream) -> None:
    await client.script_flush()
    jobs = [envelope(replies), envelope(replies, key="k2")]
    assert [s for s, _ in await queue.submit_many(jobs, lean=True)] == [  # type: ignore[misc]
        SubmitStatus.CREATED, SubmitStatus.CREATED]
