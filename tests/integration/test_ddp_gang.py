"""Gang leases of data-parallel training jobs, on a real Redis: all or none, one gang forming
at a time, release at the formation deadline, per-rank leases (scheduler/gangs.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from maas.v1 import training_service_pb2 as pb
from runtime.queue.v1.queue_pb2 import JobEnvelope, JobKind, TrainTask
from scheduler import keys
from scheduler.connection import connect
from scheduler.gangs import GangStore
from scheduler.queue import Delivery, JobQueue, new_job_id
from scheduler.training import TrainingStore

Q = keys.TRAINING_QUEUE


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = connect(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
async def queue(client: aioredis.Redis) -> JobQueue:
    q = JobQueue(client, result_ttl_ms=60_000)
    await q.ensure_group(Q)
    return q


def gangs(client: aioredis.Redis, timeout_s: float = 5.0, lease_ms: int = 1000) -> GangStore:
    return GangStore(client, timeout_s=timeout_s, lease_ms=lease_ms, result_ttl_ms=60_000)


async def create(queue: JobQueue, client: aioredis.Redis, replicas: int) -> str:
    spec = pb.TrainingSpec(model_name="m", architecture="mlp", dataset="digits",
                           batch_size=32, replicas=replicas)
    job = pb.TrainingJob(job_id=new_job_id(), spec=spec, state=pb.TrainingJob.QUEUED)
    envelope = JobEnvelope(job_id=job.job_id, kind=JobKind.JOB_KIND_TRAIN, model=Q,
                           max_attempts=3, train=TrainTask(spec=spec))
    await TrainingStore(client, queue).create(job, envelope)
    return job.job_id


async def read(queue: JobQueue, consumer: str) -> Delivery:
    (delivery,) = await queue.read(consumer, [Q], 1, block_ms=None)
    return delivery


async def test_one_replica_starts_at_once(queue: JobQueue, client: aioredis.Redis) -> None:
    job_id = await create(queue, client, 1)
    start = await gangs(client).start("w1", await read(queue, "w1"))
    assert (start.status, start.attempt, start.replicas) == ("RUN", 1, 1)
    assert (await queue.job_state(Q, job_id))["state"] == b"RUNNING"


async def test_gang_forms_all_or_none(queue: JobQueue, client: aioredis.Redis) -> None:
    store, training = gangs(client), TrainingStore(client, queue)
    job_id = await create(queue, client, 3)
    start = await store.start("w1", await read(queue, "w1"))
    assert (start.status, start.attempt, start.replicas) == ("FORMING", 0, 3)
    second = await store.join("w2")
    assert second is not None and (second.rank, second.size, second.gen) == (1, 3, 0)
    assert await store.join("w2") is None  # one rank per worker
    job = await training.get(job_id)
    assert job.state == pb.TrainingJob.QUEUED and job.attempts == 0
    assert "2 of 3 workers joined" in job.status_message
    third = await store.join("w3")
    assert third is not None and (third.rank, third.gen) == (2, 1)
    state = await queue.job_state(Q, job_id)
    assert (state["state"], state["owner"], state["attempt"]) == (b"RUNNING", b"w1", b"1")
    view = await store.view(job_id)
    assert (view.state, view.gen, view.rank0) == ("FORMED", 1, "w1")
    assert (await training.get(job_id)).status_message == ""
    assert await store.join("w4") is None  # formed: nothing to join


async def test_one_gang_forms_at_a_time(queue: JobQueue, client: aioredis.Redis) -> None:
    store = gangs(client)
    first, second = await create(queue, client, 2), await create(queue, client, 2)
    assert (await store.start("w1", await read(queue, "w1"))).status == "FORMING"
    # w2 read the other job: it goes back to the queue, and w2 joins the forming gang.
    late = await read(queue, "w2")
    assert late.job_id == second
    assert (await store.start("w2", late)).status == "REQUEUED"
    seat = await store.join("w2")
    assert seat is not None and seat.job_id == first and seat.gen == 1
    again = await read(queue, "w3")
    assert again.job_id == second and again.entry_id != late.entry_id


async def test_unformed_gang_is_released_and_says_why(queue: JobQueue,
                                                      client: aioredis.Redis) -> None:
    store = gangs(client, timeout_s=0.2)
    job_id = await create(queue, client, 2)
    delivery = await read(queue, "w1")
    assert (await store.start("w1", delivery)).status == "FORMING"
    await asyncio.sleep(0.25)
    assert await store.join("w2") is None  # past its deadline: no one joins
    assert await store.abort("w1", delivery) is False
    job = await TrainingStore(client, queue).get(job_id)
    assert job.state == pb.TrainingJob.QUEUED and job.attempts == 0
    assert "only 1 joined within 0.2 s" in job.status_message, job.status_message
    assert (await store.view(job_id)).state == ""
    again = await read(queue, "w2")  # back in the queue, at its end
    assert again.job_id == job_id and again.entry_id != delivery.entry_id


async def test_abort_loses_to_a_formed_gang(queue: JobQueue, client: aioredis.Redis) -> None:
    store = gangs(client)
    await create(queue, client, 2)
    delivery = await read(queue, "w1")
    await store.start("w1", delivery)
    assert await store.join("w2") is not None
    assert await store.abort("w1", delivery) is True  # formed first: rank 0 runs it


async def test_a_silent_rank_breaks_the_gang(queue: JobQueue, client: aioredis.Redis) -> None:
    store = gangs(client, lease_ms=300)
    job_id = await create(queue, client, 2)
    delivery = await read(queue, "w1")
    start = await store.start("w1", delivery)
    member = await store.join("w2")
    assert member is not None and start.envelope is not None
    leader = type(member)(job_id, 0, 2, member.gen, start.envelope)
    assert await store.beat(leader, "w1", addr="10.0.0.1:2345") == ("FORMED", "10.0.0.1:2345")
    assert await store.beat(member, "w2") == ("FORMED", "10.0.0.1:2345")
    assert (await store.beat(member, "w3"))[0] == "GONE"  # not w3's rank
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:  # rank 0 beats, rank 1 is silent
        assert (await store.beat(leader, "w1"))[0] == "FORMED"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.15)  # rank 1's last beat is now older than the lease
    assert (await store.beat(leader, "w1"))[0] == "BROKEN"
    assert (await store.beat(member, "w2"))[0] == "BROKEN"
    assert await store.end(leader, "w1") is True
    assert (await store.beat(member, "w2"))[0] == "GONE"
