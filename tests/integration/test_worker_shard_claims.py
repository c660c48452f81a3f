"""How a worker claims a sharded model's queues (worker/loop.py `_claim`, scheduler/shards.py),
against a real redis-server: one CLAIM per batch, the queues in turn, an empty queue skipped,
and a queue that always has more never starves the others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.queue.v1.queue_pb2 import JobEnvelope, JobKind
from runtime.settings import Settings
from scheduler import keys
from scheduler.queue import new_job_id
from worker.loop import Worker

MODEL = "hot"
QUEUES = ["hot", "hot#1", "hot#2"]


@pytest.fixture
async def worker(redis_url: str, tmp_path: Path) -> AsyncIterator[Worker]:
    w = Worker(Settings(redis_url=redis_url, data_dir=tmp_path, training_slots=0,
                        model_shards=f"{MODEL}=3"), worker_id="w-claims")
    await w.queue.ensure_group(MODEL)
    yield w
    await w.queue.client.aclose()
    w._batches.torch.shutdown(wait=True)


async def fill(worker: Worker, queue: str, n: int) -> None:
    for _ in range(n):
        await worker.queue.submit(JobEnvelope(
            job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER, model=MODEL, model_version="1",
            queue=keys.queue_field(MODEL, queue), max_attempts=3))


async def claimed_from(worker: Worker, count: int) -> set[str]:
    return {s.delivery.queue_name for s in await worker._claim(MODEL, count)}


async def test_the_queues_are_claimed_in_turn_one_claim_per_batch(worker: Worker) -> None:
    for queue in QUEUES:
        await fill(worker, queue, 8)
    order = [await claimed_from(worker, 4) for _ in range(6)]
    assert order == [{q} for q in QUEUES] * 2  # each batch from one queue, in turn
    assert len(worker._inflight[MODEL]) == 24


async def test_an_empty_queue_is_skipped_and_a_full_one_starves_none(worker: Worker) -> None:
    await fill(worker, "hot", 60)  # always more here than a batch takes
    await fill(worker, "hot#2", 4)
    order = [await claimed_from(worker, 4) for _ in range(4)]
    assert order == [{"hot"}, {"hot#2"}, {"hot"}, {"hot"}]  # hot#1 empty; hot#2 had its turn
    await fill(worker, "hot#1", 1)
    assert await claimed_from(worker, 4) == {"hot#1"}  # its turn came, right after hot's
    assert await claimed_from(worker, 4) == {"hot"}
    assert await claimed_from(worker, 100) == {"hot"}
    assert await worker._claim(MODEL, 4) == []  # every queue empty: nothing, no error
