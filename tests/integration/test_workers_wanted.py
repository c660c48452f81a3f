"""maas_workers_wanted, the one signal KEDA scales workers on (components/keda), from a real
scheduler pass over a real redis-server: every model and priority counts, a training gang
of N asks for N workers, and an idle cluster asks for none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from maas.v1 import training_service_pb2 as pb
from runtime.queue.v1.queue_pb2 import JobEnvelope, JobKind, TrainTask
from runtime.settings import Settings
from scheduler import keys
from scheduler.daemon import Daemon
from scheduler.queue import JobQueue, new_job_id
from scheduler.shards import Shards
from scheduler.training import TrainingStore

BATCH = 8


@pytest.fixture
async def daemon(redis_url: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    d = Daemon(Settings(redis_url=redis_url, data_dir=tmp_path / "data", max_batch_size=BATCH))
    yield d
    await d.queue.client.aclose()


def wanted() -> float | None:
    return REGISTRY.get_sample_value("maas_workers_wanted")


async def submit(queue: JobQueue, model: str, n: int, priority: int = 0) -> None:
    """`n` jobs on `model`'s queue (or on the shard of a model that `model` names)."""
    for _ in range(n):
        await queue.submit(JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER,
                                       model=keys.model_of_queue(model), model_version="1",
                                       queue=model if keys.SHARD_SEP in model else "",
                                       max_attempts=3, priority=priority))


async def train(queue: JobQueue, client: aioredis.Redis, replicas: int) -> None:
    spec = pb.TrainingSpec(model_name="m", architecture="mlp", dataset="digits",
                           batch_size=32, replicas=replicas)
    job = pb.TrainingJob(job_id=new_job_id(), spec=spec, state=pb.TrainingJob.QUEUED)
    await TrainingStore(client, queue).create(job, JobEnvelope(
        job_id=job.job_id, kind=JobKind.JOB_KIND_TRAIN, model=keys.TRAINING_QUEUE,
        max_attempts=3, train=TrainTask(spec=spec)))


async def test_every_model_priority_and_gang_counts(client: aioredis.Redis,
                                                    daemon: Daemon) -> None:
    queue = JobQueue(client, result_ttl_ms=60_000)
    await client.sadd(keys.models(), "a", "b")  # as registering the two models leaves it
    for model in ("a", "b"):
        await queue.ensure_group(model)
    await queue.ensure_group(keys.TRAINING_QUEUE)
    await daemon.reap_once()
    assert wanted() == 0  # idle: nothing asks for a worker

    await submit(queue, "a", 1, priority=3)  # one low-priority job: a worker must wake
    await daemon.reap_once()
    assert wanted() == 1

    await submit(queue, "a", 6, priority=1)  # high
    await submit(queue, "b", 9)  # 16 jobs over two models and three priorities: 2 batches
    await daemon.reap_once()
    assert wanted() == 2

    # Leased jobs still need their worker: a claimed batch keeps counting.
    started = (await queue.claim("w1", "b", BATCH)).runnable
    assert len(started) == BATCH
    await daemon.reap_once()
    assert wanted() == 2

    await train(queue, client, replicas=3)  # a gang of 3 asks for 3 workers at once
    await train(queue, client, replicas=1)
    await daemon.reap_once()
    assert wanted() == 2 + 3 + 1


async def test_a_running_gang_still_counts(client: aioredis.Redis, daemon: Daemon) -> None:
    queue = JobQueue(client, result_ttl_ms=60_000)
    await queue.ensure_group(keys.TRAINING_QUEUE)
    await train(queue, client, replicas=2)
    (delivery,) = await queue.read("w1", [keys.TRAINING_QUEUE], 1, block_ms=None)
    assert delivery.job_id
    await daemon.reap_once()
    assert wanted() == 2  # leased by rank 0: the gang needs both workers until it ends


async def test_pooled_models_are_left_to_their_pools(client: aioredis.Redis,
                                                     redis_url: str, tmp_path: Path) -> None:
    """MAAS_POOLED_MODELS: a model with a worker pool of its own scales that pool on its own
    queue depth; its jobs do not ask the general fleet for workers."""
    pooled = Daemon(Settings(redis_url=redis_url, data_dir=tmp_path / "data",
                             max_batch_size=BATCH, pooled_models="cnn"))
    try:
        queue = JobQueue(client, result_ttl_ms=60_000)
        await client.sadd(keys.models(), "cnn", "acme/cnn", "mlp")
        for model in ("cnn", "acme/cnn", "mlp"):
            await queue.ensure_group(model)
        await submit(queue, "cnn", 20)
        await submit(queue, "acme/cnn", 5)  # a name: every tenant's cnn has the pool
        await pooled.reap_once()
        assert wanted() == 0
        assert REGISTRY.get_sample_value("maas_queue_depth", {"model": "cnn"}) == 20
        await submit(queue, "mlp", 1)
        await pooled.reap_once()
        assert wanted() == 1
    finally:
        await pooled.queue.client.aclose()


async def test_a_sharded_models_queues_count_as_one(client: aioredis.Redis, redis_url: str,
                                                    tmp_path: Path) -> None:
    """MAAS_MODEL_SHARDS: the scheduler reaps and counts every queue of the model, and its
    queue depth (a model pool's KEDA trigger) and the fleet's signal are their sum."""
    sharded = Daemon(Settings(redis_url=redis_url, data_dir=tmp_path / "data",
                              max_batch_size=BATCH, model_shards="hot=3"))
    try:
        queue = JobQueue(client, result_ttl_ms=60_000, shards=Shards({"hot": 3}))
        await client.sadd(keys.models(), "hot")
        await sharded.reap_once()  # makes the groups of every queue
        for q in ("hot", "hot#1", "hot#2"):
            assert await client.exists(keys.stream(q)) == 1
            await submit(queue, q, 4)  # 12 jobs, 4 on each queue
        await sharded.reap_once()
        assert REGISTRY.get_sample_value("maas_queue_depth", {"model": "hot"}) == 12
        assert wanted() == 2  # 12 jobs, batches of 8
        # A lease that lapses on a shard is reaped there.
        [lost] = (await queue.claim("w1", "hot#2", 1)).runnable
        await asyncio.sleep(0.05)
        await sharded.queue.reap("hot#2", lease_ms=10)
        state = await queue.job_state("hot#2", lost.delivery.job_id)
        assert state["state"] == b"QUEUED" and state["attempt"] == b"1"
    finally:
        await sharded.queue.client.aclose()
