"""AsyncJobs (gateway/plane/jobs.py) and JobView (scheduler/job_view.py) on a real redis-server,
without a gRPC server: submit, read, wait, cancel, tenants, the job hash decoded once."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from gateway.plane.jobs import AsyncJobs
from gateway.plane.models import ModelLifecycle
from maas.errors import (
    FailedPrecondition,
    IdempotencyKeyReused,
    InvalidArgument,
    JobNotFound,
    ModelTooLarge,
)
from maas.v1 import inference_service_pb2 as pb
from maas.v1 import model_service_pb2 as mpb
from runtime.artifacts import ArtifactStore
from runtime.queue.v1.queue_pb2 import (
    InferOutput,
    JobError,
    JobResult,
    JobState,
    Tensor,
    WorkerHeartbeat,
)
from runtime.settings import Settings
from scheduler import keys
from scheduler.job_view import JobReader, job_view, model_of_job_id
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry
from scheduler.shards import Shards
from scheduler.workers import WorkerDirectory
from tests.inprocess import mlp_weights

pytestmark = pytest.mark.timeout(30)

MODEL = "digits"


@pytest.fixture
async def queue(client: aioredis.Redis) -> JobQueue:
    return JobQueue(client, result_ttl_ms=60_000)


@pytest.fixture
async def jobs(client: aioredis.Redis, queue: JobQueue, tmp_path: Path) -> AsyncJobs:
    registry = ModelRegistry(client)
    models = ModelLifecycle(registry, queue, ArtifactStore(tmp_path / "artifacts"))
    await models.register(mpb.RegisterModelRequest(name=MODEL, architecture="mlp",
                                                   weights=mlp_weights()))
    return AsyncJobs(Settings(default_deadline_s=5.0), queue, registry)


def request(request_id: str = "", value: float = 0.0) -> pb.SubmitInferenceRequest:
    raw = np.full((1, 64), value, np.float32).tobytes()
    return pb.SubmitInferenceRequest(
        model=MODEL, request_id=request_id,
        inputs=[pb.Tensor(name="input", datatype="FP32", shape=[1, 64], raw=raw)])


async def finish(queue: JobQueue, job_id: str, result: JobResult) -> None:
    outcome = await queue.claim("w1", MODEL, 10)
    (started,) = outcome.runnable
    assert started.delivery.job_id == job_id
    result.job_id = job_id
    assert await queue.complete("w1", [(started.delivery, result)]) == [True]


async def test_a_submitted_job_is_queued_and_named_by_its_model(jobs: AsyncJobs) -> None:
    job = await jobs.submit(request("r1"), tenant="")
    assert job.state == pb.InferenceJob.QUEUED and job.request_id == "r1"
    assert job.model == MODEL and job.model_version == "1" and job.attempts == 0
    assert model_of_job_id(job.job_id) == MODEL and len(job.job_id) == len(MODEL) + 1 + 32
    assert abs(job.create_time.ToMilliseconds() - time.time() * 1000) < 5000
    again = await jobs.get(job.job_id, tenant="")
    assert again.job_id == job.job_id and not again.request_id


async def test_a_job_no_live_worker_has_the_memory_for_is_refused(
        jobs: AsyncJobs, client: aioredis.Redis, queue: JobQueue) -> None:
    """Live workers that serve the model, none with room for its weights: refused, not
    queued; once one fits (or with MAAS_REQUIRE_LIVE_WORKER=off), queued."""
    small = WorkerHeartbeat(worker_id="w-small", model_memory_budget_bytes=1024)
    await WorkerDirectory(client).beat(small, ttl_ms=60_000)

    def placed(require_live_worker: str = "on") -> AsyncJobs:  # a fresh directory cache
        return AsyncJobs(Settings(require_live_worker=require_live_worker), queue,
                         ModelRegistry(client), workers=WorkerDirectory(client))

    with pytest.raises(ModelTooLarge) as refused:
        await placed().submit(request(), tenant="")
    assert "MAAS_WORKER_MODEL_MEMORY_MB" in refused.value.message
    assert await client.xlen(keys.stream(MODEL)) == 0
    assert (await placed("off").submit(request(), tenant="")).state == pb.InferenceJob.QUEUED
    await WorkerDirectory(client).beat(WorkerHeartbeat(worker_id="w-large"), ttl_ms=60_000)
    assert (await placed().submit(request(), tenant="")).state == pb.InferenceJob.QUEUED


async def test_a_request_id_finds_the_same_job_or_refuses_another_body(jobs: AsyncJobs) -> None:
    first = await jobs.submit(request("same"), tenant="")
    assert (await jobs.submit(request("same"), tenant="")).job_id == first.job_id
    with pytest.raises(IdempotencyKeyReused):
        await jobs.submit(request("same", value=1.0), tenant="")


async def test_a_result_is_read_back_with_its_outputs(jobs: AsyncJobs, queue: JobQueue) -> None:
    job = await jobs.submit(request(), tenant="")
    out = Tensor(name="output", datatype="FP32", shape=[1, 10], raw=bytes(40))
    await finish(queue, job.job_id, JobResult(state=JobState.JOB_STATE_SUCCEEDED,
                                              infer=InferOutput(outputs=[out])))
    done = await jobs.wait(job.job_id, "", timeout_ms=1000, time_remaining_s=None)
    assert done.state == pb.InferenceJob.SUCCEEDED and done.attempts == 1
    assert [(t.name, list(t.shape), t.raw) for t in done.outputs] == [
        ("output", [1, 10], bytes(40))]
    assert not done.HasField("error")


async def test_a_failed_result_carries_its_error(jobs: AsyncJobs, queue: JobQueue) -> None:
    job = await jobs.submit(request(), tenant="")
    error = JobError(code="INVALID_ARGUMENT", reason="BAD_INPUT", message="no")
    await finish(queue, job.job_id, JobResult(state=JobState.JOB_STATE_FAILED, error=error))
    failed = await jobs.get(job.job_id, "")
    assert failed.state == pb.InferenceJob.FAILED
    assert (failed.error.code, failed.error.reason, failed.error.message) == (
        "INVALID_ARGUMENT", "BAD_INPUT", "no")


async def test_wait_returns_a_queued_job_when_its_time_runs_out(jobs: AsyncJobs) -> None:
    job = await jobs.submit(request(), tenant="")
    started = time.monotonic()
    waited = await jobs.wait(job.job_id, "", timeout_ms=300, time_remaining_s=10.0)
    assert waited.state == pb.InferenceJob.QUEUED
    assert 0.1 < time.monotonic() - started < 2.0
    with pytest.raises(InvalidArgument):
        await jobs.wait(job.job_id, "", timeout_ms=-1, time_remaining_s=None)


async def test_cancel_ends_a_queued_job_once(jobs: AsyncJobs) -> None:
    job = await jobs.submit(request(), tenant="")
    cancelled = await jobs.cancel(job.job_id, "")
    assert cancelled.state == pb.InferenceJob.CANCELLED
    with pytest.raises(FailedPrecondition, match=r"already ended \(CANCELLED\)") as caught:
        await jobs.cancel(job.job_id, "")
    assert caught.value.reason == "JOB_ALREADY_FINISHED"


async def test_another_tenants_job_does_not_exist(jobs: AsyncJobs) -> None:
    job = await jobs.submit(request(), tenant="")
    for call in (jobs.get(job.job_id, "acme"), jobs.cancel(job.job_id, "acme")):
        with pytest.raises(JobNotFound):
            await call
    assert (await jobs.get(job.job_id, "")).state == pb.InferenceJob.QUEUED


@pytest.mark.parametrize("job_id", ["", "abc", "digits:", ":abc", "a b:abc", "digits#:abc",
                                    "digits#0:abc", "digits#01:abc", "digits#64:abc",
                                    "digits#x:abc", "digits#1#2:abc", "#1:abc"])
async def test_a_malformed_job_id_is_invalid(jobs: AsyncJobs, job_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await jobs.get(job_id, "")
    assert caught.value.violations[0].field == "job_id"


async def test_the_reader_decodes_the_hash(jobs: AsyncJobs, queue: JobQueue,
                                           client: aioredis.Redis) -> None:
    job = await jobs.submit(request(), tenant="")
    view = await JobReader(client).read(MODEL, job.job_id)
    assert view is not None and view.state_name == "QUEUED" and not view.is_terminal
    assert (view.model, view.version, view.tenant, view.attempt) == (MODEL, "1", "", 0)
    assert view.max_attempts == Settings().max_attempts and view.deadline_ms > view.created_ms
    assert view.result is None and view.error is None and not view.is_cancel_requested
    assert await JobReader.of(queue).read(MODEL, keys.model_id("", "nope")) is None


def test_job_view_takes_the_scripts_error_when_there_is_no_result() -> None:
    fields: dict[str, bytes | None] = {
        "state": b"EXPIRED", "attempt": b"2", "tenant": b"acme", "error_code":
        b"DEADLINE_EXCEEDED", "error_reason": b"EXPIRED", "error_message": b"late",
        "result": b""}
    view = job_view("acme/m", "acme/m:1", fields)
    assert view is not None and view.state == JobState.JOB_STATE_EXPIRED and view.is_terminal
    assert view.error == JobError(code="DEADLINE_EXCEEDED", reason="EXPIRED", message="late")
    assert view.result is None and view.attempt == 2 and view.created_ms == 0
    assert job_view("m", "m:1", {"state": None}) is None
    with pytest.raises(ValueError):
        job_view("m", "m:1", {"state": b"LOST"})


async def test_a_sharded_models_jobs_name_their_queue(client: aioredis.Redis,
                                                      tmp_path: Path) -> None:
    """MAAS_MODEL_SHARDS: each job id names the queue it is on; the job is found, waited on
    and cancelled there, shown by its model, and another tenant's view is NOT_FOUND."""
    queue = JobQueue(client, result_ttl_ms=60_000, shards=Shards({MODEL: 3}))
    registry = ModelRegistry(client)
    models = ModelLifecycle(registry, queue, ArtifactStore(tmp_path / "artifacts"))
    await models.register(mpb.RegisterModelRequest(name=MODEL, architecture="mlp",
                                                   weights=mlp_weights()))
    jobs = AsyncJobs(Settings(default_deadline_s=5.0), queue, registry)
    made = [await jobs.submit(request(), tenant="") for _ in range(3)]
    assert [model_of_job_id(j.job_id) for j in made] == ["digits", "digits#1", "digits#2"]
    for job in made:
        assert job.model == MODEL and job.state == pb.InferenceJob.QUEUED
        assert (await jobs.get(job.job_id, "")).job_id == job.job_id
        with pytest.raises(JobNotFound):
            await jobs.get(job.job_id, "acme")
    again = await jobs.submit(request("r-9"), tenant="")
    assert (await jobs.submit(request("r-9"), tenant="")).job_id == again.job_id
    cancelled = await jobs.cancel(made[2].job_id, "")
    assert cancelled.state == pb.InferenceJob.CANCELLED
    with pytest.raises(JobNotFound):  # a queue number the model does not have
        await jobs.get(made[0].job_id.replace("digits:", "digits#7:"), "")
