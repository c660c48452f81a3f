"""A worker's hand-back (worker/handoff.py) on a real redis-server: a job whose version is too
large for its model memory goes back to the queue, its attempt refunded, when a live worker
has room for it, and the model is left unread for a while; with no such worker it is kept
(and fails MODEL_TOO_LARGE where it runs)."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
import redis.asyncio as aioredis

from maas.v1.model_service_pb2 import ModelVersion
from runtime.queue.v1.queue_pb2 import JobEnvelope, JobKind, WorkerHeartbeat
from scheduler.job_view import JobReader
from scheduler.queue import Delivery, JobQueue, new_job_id
from scheduler.workers import WorkerDirectory
from worker.handoff import PAUSE_S, Handoff

pytestmark = pytest.mark.timeout(30)

MIB = 1024 * 1024
MODEL = "big"
BIG = ModelVersion(model=MODEL, version="1", architecture="mlp", weights_bytes=4 * MIB)
SMALL = ModelVersion(model=MODEL, version="2", architecture="mlp", weights_bytes=MIB // 2)


async def submitted(queue: JobQueue, version: str) -> str:
    now_ms = int(time.time() * 1000)
    job_id = new_job_id()
    await queue.submit(JobEnvelope(job_id=job_id, kind=JobKind.JOB_KIND_INFER, model=MODEL,
                                   model_version=version, max_attempts=3,
                                   enqueue_unix_ms=now_ms, deadline_unix_ms=now_ms + 60_000))
    return job_id


def small_worker(client: aioredis.Redis, queue: JobQueue,
                 inflight: dict[str, set[Delivery]]) -> Handoff:
    """worker-1's hand-back, 1 MiB of model memory (a fresh directory: nothing cached)."""
    return Handoff("worker-1", queue, WorkerDirectory(client), MIB, inflight,
                   lambda model, jobs: pytest.fail(f"lost {jobs} leases of {model}"))


async def test_a_job_too_large_here_goes_to_a_worker_that_fits(client: aioredis.Redis) -> None:
    queue = JobQueue(client, result_ttl_ms=60_000)
    await queue.ensure_group(MODEL)
    directory = WorkerDirectory(client)
    await directory.beat(WorkerHeartbeat(worker_id="worker-1", model_memory_budget_bytes=MIB),
                         ttl_ms=60_000)
    await directory.beat(WorkerHeartbeat(worker_id="worker-2"), ttl_ms=60_000)  # unlimited
    large, small = await submitted(queue, "1"), await submitted(queue, "2")
    inflight: dict[str, set[Delivery]] = defaultdict(set)
    batch = (await queue.claim("worker-1", MODEL, 10)).runnable
    inflight[MODEL].update(s.delivery for s in batch)
    handoff = small_worker(client, queue, inflight)

    kept = await handoff.keep(MODEL, batch, {"1": BIG, "2": SMALL})
    assert [s.delivery.job_id for s in kept] == [small]  # the version that fits runs here
    assert {d.job_id for d in inflight[MODEL]} == {small}
    assert handoff.is_paused(MODEL) and 0 < handoff.pause_left_s() <= PAUSE_S
    assert not handoff.is_paused("other")
    view = await JobReader.of(queue).read(MODEL, large)
    assert view is not None and view.state_name == "QUEUED" and view.attempt == 0  # refunded
    [taken] = (await queue.claim("worker-2", MODEL, 10)).runnable
    assert (taken.delivery.job_id, taken.attempt) == (large, 1)


async def test_a_job_no_live_worker_fits_is_kept(client: aioredis.Redis) -> None:
    queue = JobQueue(client, result_ttl_ms=60_000)
    await queue.ensure_group(MODEL)
    await WorkerDirectory(client).beat(
        WorkerHeartbeat(worker_id="worker-1", model_memory_budget_bytes=MIB), ttl_ms=60_000)
    await WorkerDirectory(client).beat(  # room enough, but pinned to another model
        WorkerHeartbeat(worker_id="worker-2", serves=["cnn"]), ttl_ms=60_000)
    await submitted(queue, "1")
    batch = (await queue.claim("worker-1", MODEL, 10)).runnable
    handoff = small_worker(client, queue, defaultdict(set))
    assert await handoff.keep(MODEL, batch, {"1": BIG}) == batch  # to fail MODEL_TOO_LARGE
    assert not handoff.is_paused(MODEL) and handoff.pause_left_s() == 0
