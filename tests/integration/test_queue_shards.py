"""A sharded model's queues (MAAS_MODEL_SHARDS, scheduler/shards.py) against a real Redis: jobs
spread over the queues and each queue is claimed, a request_id meets its first submit, a
lapsed lease on a shard is reaped and fenced there, dead letters, statistics and a tenant's
quota span the queues. Each test runs on a plain Redis, the slot-checked one-node cluster and
the 3 + 3 Redis Cluster (where the queues sit on different primaries)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from maas.errors import QueueFull, QuotaExceeded
from runtime.queue.v1.queue_pb2 import InferTask, JobEnvelope, JobKind, JobResult, JobState
from scheduler import keys
from scheduler.connection import connect
from scheduler.queue import Delivery, JobQueue, RetryPolicy, SubmitStatus, TenantPolicy, new_job_id
from scheduler.replies import ReplyStream
from scheduler.shards import Shards, jump_hash

MODEL = "hot"
SHARDS = 4
LEASE_MS = 200


@pytest.fixture
def client(any_redis_client: aioredis.Redis) -> aioredis.Redis:
    """Each test on a plain Redis, the slot-checked node and the 3 + 3 Redis Cluster."""
    return any_redis_client


def sharded_queue(client: aioredis.Redis, **kwargs: object) -> JobQueue:
    return JobQueue(client, result_ttl_ms=60_000, retry=RetryPolicy(backoff_ms=0, backoff_max_ms=0),
                    shards=Shards({MODEL: SHARDS}), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def queue(client: aioredis.Redis) -> JobQueue:
    q = sharded_queue(client)
    await q.ensure_group(MODEL)  # every queue of the model
    return q


def envelope(queue: JobQueue, *, key: str = "", reply_to: str = "", tenant: str = "",
             max_attempts: int = 3, body: str = "a") -> JobEnvelope:
    picked = queue.shards.pick(MODEL, key)
    return JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER, model=MODEL,
                       queue=keys.queue_field(MODEL, picked), model_version="1",
                       idempotency_key=key, reply_to=reply_to, tenant=tenant,
                       max_attempts=max_attempts, infer=InferTask(request_id=body))


def succeeded(d: Delivery) -> JobResult:
    return JobResult(job_id=d.job_id, state=JobState.JOB_STATE_SUCCEEDED)


async def read_all(queue: JobQueue, consumer: str) -> list[Delivery]:
    """What a worker reads of every queue of the model (one read per queue: the slot-checked
    node refuses a read across slots, as a worker's cluster client never sends one)."""
    found = []
    for q in queue.shards.queues(MODEL):
        await queue.promote(q)  # reaped jobs are due at once (backoff 0)
        found += await queue.read(consumer, [q], 100, block_ms=None)
    return found


def test_the_queues_are_named_and_slotted_apart() -> None:
    shards = Shards({MODEL: SHARDS, "acme/big": 2})
    assert shards.queues(MODEL) == ["hot", "hot#1", "hot#2", "hot#3"]
    assert shards.queues("acme/hot") == ["acme/hot", "acme/hot#1", "acme/hot#2", "acme/hot#3"]
    assert shards.queues("big") == ["big"] and shards.count("acme/big") == 2
    assert [keys.model_of_queue(q) for q in shards.queues(MODEL)] == [MODEL] * SHARDS
    assert [keys.shard_of_queue(q) for q in shards.queues(MODEL)] == [0, 1, 2, 3]
    for bad in ("hot#0", "hot#01", "hot#64", "hot#x", "hot#", "hot#1#2", "hot#٣"):
        assert keys.shard_of_queue(bad) is None, bad
    assert [shards.pick(MODEL, turn=t) for t in range(5)] == [*shards.queues(MODEL), "hot"]
    assert shards.pick(MODEL, "k", turn=1) == shards.pick(MODEL, "k", turn=2)  # the key wins
    assert shards.pick("big", turn=1) == "big" and shards.pick("big", "k") == "big"
    tags = {keys.stream(q).split("}")[0] for q in shards.queues(MODEL)}
    assert len(tags) == SHARDS  # a hash tag (so a slot) per queue


def test_raising_the_shards_moves_only_the_keys_of_the_new_queues() -> None:
    """request_ids by jump consistent hashing: from 3 to 4 queues, a quarter of the keys move,
    all of them to the new queue; none moves between the old ones."""
    ids = [f"req-{i}" for i in range(4000)]
    before = [jump_hash(k, 3) for k in ids]
    after = [jump_hash(k, 4) for k in ids]
    assert sorted(set(before)) == [0, 1, 2] and sorted(set(after)) == [0, 1, 2, 3]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert {a for _, a in moved} == {3}
    assert 0.2 < len(moved) / len(ids) < 0.3
    assert all(jump_hash(k, 1) == 0 for k in ids[:50])


async def test_jobs_spread_over_the_queues_and_each_is_claimed(
        queue: JobQueue, client: aioredis.Redis) -> None:
    if isinstance(client, RedisCluster):  # the point of it: the queues live on several primaries
        nodes = {client.get_node_from_key(keys.stream(q)).name
                 for q in queue.shards.queues(MODEL)}
        assert len(nodes) >= 2, nodes
    replies = {q: ReplyStream(client, "gw-1", q) for q in queue.shards.queues(MODEL)}
    jobs = []
    for i in range(4 * SHARDS):
        job = envelope(queue, body=str(i))
        job.reply_to = replies[job.queue or MODEL].key
        jobs.append(job)
    outcomes = await queue.submit_many(jobs, lean=True)
    assert [o[0] for o in outcomes] == [SubmitStatus.CREATED] * len(jobs)  # type: ignore[index]
    per_queue = Counter(job.queue or MODEL for job in jobs)
    assert per_queue == dict.fromkeys(queue.shards.queues(MODEL), 4)  # in turn

    claimed: list[Delivery] = []
    for q in queue.shards.queues(MODEL):  # CLAIM is per queue: each hands out its own jobs
        outcome = await queue.claim("w1", q, 100)
        assert {s.delivery.queue_name for s in outcome.runnable} == {q}
        assert {s.delivery.model for s in outcome.runnable} == {MODEL}
        claimed += [s.delivery for s in outcome.runnable]
    assert len(claimed) == len(jobs)
    # One COMPLETE call for deliveries of every queue: each recorded on its own queue.
    assert await queue.complete("w1", [(d, succeeded(d)) for d in claimed]) == [True] * len(jobs)
    answered = [r.job_id for s in replies.values() for r in await s.read(block_ms=100)]
    assert sorted(answered) == sorted(j.job_id for j in jobs)


async def test_a_request_id_meets_its_first_submit(queue: JobQueue) -> None:
    first = envelope(queue, key="req-1")
    assert await queue.submit(first) == (SubmitStatus.CREATED, first.job_id)
    for _ in range(3):  # retries, whatever the turn, go to the same queue
        again = envelope(queue, key="req-1")
        assert again.queue == first.queue
        assert await queue.submit(again) == (SubmitStatus.EXISTS, first.job_id)
    spread = {envelope(queue, key=f"req-{i}").queue for i in range(64)}
    assert len(spread) == SHARDS  # keys spread over every queue
    assert len(await read_all(queue, "w1")) == 1


async def test_a_lapsed_lease_on_a_shard_is_reaped_and_fenced_there(queue: JobQueue) -> None:
    job = envelope(queue)
    while not job.queue:  # a shard, not the model's own queue
        job = envelope(queue)
    await queue.submit(job)
    [d] = await read_all(queue, "w1")
    assert (d.model, d.queue) == (MODEL, job.queue)
    assert (await queue.start("w1", [d])).runnable[0].attempt == 1
    await asyncio.sleep(LEASE_MS * 1.5 / 1000)  # w1 died
    assert (await queue.reap(MODEL, LEASE_MS)).requeued == 0  # not the job's queue
    assert (await queue.reap(job.queue, LEASE_MS)).requeued == 1
    [again] = await read_all(queue, "w2")
    assert again.queue == job.queue
    assert (await queue.start("w2", [again])).runnable[0].attempt == 2
    assert await queue.complete("w1", [(d, succeeded(d))]) == [False]  # fenced
    assert await queue.complete("w2", [(again, succeeded(again))]) == [True]
    state = await queue.job_state(job.queue, job.job_id)
    assert state["state"] == b"SUCCEEDED" and state["attempt"] == b"2"


async def test_dead_letters_and_statistics_span_the_queues(queue: JobQueue) -> None:
    jobs = [envelope(queue, max_attempts=1) for _ in range(SHARDS)]  # one per queue
    for job in jobs:
        await queue.submit(job)
    waiting = await queue.stats(MODEL, "")
    assert waiting.model == MODEL and waiting.waiting == SHARDS and waiting.leased == 0
    taken = await read_all(queue, "w1")
    await queue.start("w1", taken)
    assert (await queue.stats(MODEL, "")).leased == SHARDS
    await asyncio.sleep(LEASE_MS * 1.5 / 1000)
    for q in queue.shards.queues(MODEL):
        assert (await queue.reap(q, LEASE_MS)).dead == 1
    letters = await queue.dead_letters(MODEL)
    assert sorted(letter.job_id for letter in letters) == sorted(j.job_id for j in jobs)
    assert {letter.queue for letter in letters} == set(queue.shards.queues(MODEL))
    assert (await queue.stats(MODEL, "")).dead_letters == SHARDS
    redriven = await queue.redrive(MODEL, [jobs[1].job_id, jobs[3].job_id])
    assert sorted(redriven) == sorted([jobs[1].job_id, jobs[3].job_id])
    after = await queue.stats(MODEL, "")
    assert after.dead_letters == SHARDS - 2 and after.waiting == 2
    back = await read_all(queue, "w2")
    assert {(d.queue_name, d.job_id) for d in back} == {
        (jobs[i].queue or MODEL, jobs[i].job_id) for i in (1, 3)}


def on_queue(queue: JobQueue, name: str, count: int, **kwargs: object) -> list[JobEnvelope]:
    """`count` envelopes that the gateway's turns put on queue `name`."""
    found: list[JobEnvelope] = []
    while len(found) < count:
        job = envelope(queue, **kwargs)  # type: ignore[arg-type]
        if (job.queue or MODEL) == name:
            found.append(job)
    return found


@pytest.mark.parametrize("name", ["hot", "hot#2"])
async def test_a_tenants_quota_is_split_among_the_queues(client: aioredis.Redis,
                                                         name: str) -> None:
    queue = sharded_queue(client, tenants=TenantPolicy(max_queued=6))  # 2 per queue
    await queue.ensure_group(MODEL)
    tenant = "acme"
    jobs = on_queue(queue, name, 3, tenant=tenant)
    for job in jobs[:2]:
        await queue.submit(job)
    with pytest.raises(QuotaExceeded, match=f"on queue '{name}' of model 'hot', its most there "
                       r"\(2: MAAS_TENANT_MAX_QUEUED=6 split"):
        await queue.submit(jobs[2])
    assert await queue.tenant_queued(MODEL, tenant) == 2


@pytest.mark.parametrize("name", ["hot", "hot#1"])
async def test_the_depth_limit_is_split_among_the_queues(client: aioredis.Redis,
                                                         name: str) -> None:
    queue = sharded_queue(client, max_depth=7)  # 2 per queue (rounded up)
    await queue.ensure_group(MODEL)
    reply_to = keys.reply_stream(name, "gw-1")
    jobs = on_queue(queue, name, 3, reply_to=reply_to)
    hashed = on_queue(queue, name, 1)
    outcomes = await queue.submit_many(jobs, lean=True)
    assert [type(o).__name__ for o in outcomes] == ["tuple", "tuple", "QueueFull"]
    with pytest.raises(QueueFull):
        await queue.submit(hashed[0])


@pytest.mark.parametrize("url", ["redis_url", "redis_cluster_url"])
async def test_one_read_takes_every_queue_of_the_model(
        url: str, request: pytest.FixtureRequest) -> None:
    """A worker's blocking read over the model's queues: one XREADGROUP on one Redis, one
    read per queue's slot on a cluster (scheduler/slot_reads.py); each delivery names its
    queue."""
    client = connect(str(request.getfixturevalue(url)))
    try:
        queue = sharded_queue(client)
        await queue.ensure_group(MODEL)
        jobs = [envelope(queue) for _ in range(2 * SHARDS)]
        for job in jobs:
            await queue.submit(job)
        found: list[Delivery] = []
        for _ in range(10):  # on a cluster, reads still blocking are taken up by the next call
            found += await queue.read("w1", queue.shards.expand([MODEL]), 100, block_ms=50)
            if len(found) == len(jobs):
                break
        assert sorted((d.queue_name, d.job_id) for d in found) == sorted(
            (j.queue or MODEL, j.job_id) for j in jobs)
        await queue.stop_reads()
    finally:
        await client.aclose()
