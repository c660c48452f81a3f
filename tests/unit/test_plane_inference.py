"""InferencePlane without gRPC: requests in, responses and MaasErrors out, against a real
redis-server. The test plays the worker through the queue API (claim, complete), so each
job is answered exactly when and how a test says."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from gateway.plane.inference import Caller, InferencePlane
from gateway.replies import ReplyDispatcher
from gateway.submitter import SubmitCoalescer
from maas.errors import (
    DeadlineExceeded,
    InvalidArgument,
    JobFailed,
    MessageTooLarge,
    ModelNotFound,
    ModelTooLarge,
    ModelUnloaded,
    QueueFull,
    Unavailable,
)
from maas.inference import grpc_service_pb2 as pb
from maas.v1.model_service_pb2 import ModelVersion, TensorSpec
from runtime.queue.v1.queue_pb2 import (
    InferOutput,
    JobEnvelope,
    JobError,
    JobKind,
    JobResult,
    JobState,
    Tensor,
    WorkerHeartbeat,
)
from runtime.settings import Settings
from scheduler import keys
from scheduler.connection import connect
from scheduler.queue import JobQueue, Started, new_job_id
from scheduler.registry import ModelRegistry
from scheduler.replies import ReplyStream
from scheduler.workers import WorkerDirectory

MODEL = "plane-m"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Rig:
    plane: InferencePlane
    queue: JobQueue
    registry: ModelRegistry
    workers: WorkerDirectory
    redis: aioredis.Redis
    reply_key: str


def model_version(model: str = MODEL) -> ModelVersion:
    return ModelVersion(model=model, architecture="mlp",
                        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
                        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 2])])


@contextlib.asynccontextmanager
async def rig_of(redis_url: str, **settings: object) -> AsyncIterator[Rig]:
    """A plane on a real Redis, its submitter and reply reader running."""
    redis = connect(redis_url)
    queue = JobQueue(redis)
    registry = ModelRegistry(redis)
    await registry.add_version(model_version())
    await queue.ensure_group(MODEL)
    replies = ReplyDispatcher(lambda model: ReplyStream(redis, "gw-plane", model))
    submitter, workers = SubmitCoalescer(queue), WorkerDirectory(redis)
    values: dict[str, object] = {"require_live_worker": "off", **settings}
    plane = InferencePlane(Settings(redis_url=redis_url, **values),  # type: ignore[arg-type]
                           submitter, registry, workers, replies)
    try:
        async with asyncio.TaskGroup() as running:
            loops = [running.create_task(replies.run()), running.create_task(submitter.run())]
            try:
                yield Rig(plane, queue, registry, workers, redis, replies.reply_key(MODEL))
            finally:
                for loop in loops:
                    loop.cancel()
    finally:
        await redis.aclose()


@pytest.fixture
async def rig(redis_url: str) -> AsyncIterator[Rig]:
    async with rig_of(redis_url) as r:
        yield r


def request(x: np.ndarray, *, name: str = "x", request_id: str = "r-1",
            model: str = MODEL) -> pb.ModelInferRequest:
    out = pb.ModelInferRequest(model_name=model, id=request_id)
    out.inputs.add(name=name, datatype="FP32", shape=x.shape)
    out.raw_input_contents.append(x.tobytes())
    return out


def doubled(started: Started) -> JobResult:
    """What the test's worker answers: y = 2 * the first two columns of x."""
    [x] = started.envelope.infer.inputs
    y = (np.frombuffer(x.raw, np.float32).reshape(tuple(x.shape))[:, :2] * 2).copy()
    return JobResult(state=JobState.JOB_STATE_SUCCEEDED, attempt=started.attempt,
                     batch_size=3, queue_us=11, compute_us=22, infer=InferOutput(outputs=[
                         Tensor(name="y", datatype="FP32", shape=y.shape, raw=y.tobytes())]))


async def answer_one(queue: JobQueue, result_of: Callable[[Started], JobResult] = doubled,
                     ) -> JobEnvelope:
    """Plays the worker for the next job: claims it (waiting for it), completes it."""
    claimed: list[Started] = []

    async def has_claimed() -> bool:
        claimed.extend((await queue.claim("w-test", MODEL, 1)).runnable)
        return bool(claimed)

    await until(has_claimed)
    [started] = claimed
    assert await queue.complete("w-test", [(started.delivery, result_of(started))]) == [True]
    return started.envelope


async def queued(rig: Rig) -> int:
    return await queued_in(rig.redis)


async def queued_in(redis: aioredis.Redis) -> int:
    return int(await redis.xlen(keys.stream(MODEL)))


async def until(check: Callable[[], Awaitable[object]], timeout_s: float = 10.0) -> None:
    """Polls a Redis read until it is true (nothing in-process to wait on)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_a_request_runs_as_one_job_and_its_result_is_the_response(rig: Rig) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    caller = Caller("", time_left_s=5.0, trace_context={"traceparent": TRACEPARENT})
    response, envelope = await asyncio.gather(rig.plane.infer(request(x), caller),
                                              answer_one(rig.queue))
    assert (response.model_name, response.model_version, response.id) == (MODEL, "1", "r-1")
    [out] = response.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("y", "FP32", [2, 2])
    np.testing.assert_array_equal(
        np.frombuffer(response.raw_output_contents[0], np.float32).reshape(2, 2), x[:, :2] * 2)
    assert {k: v.int64_param for k, v in response.parameters.items()} == {
        "maas_batch_size": 3, "maas_queue_us": 11, "maas_compute_us": 22, "maas_attempt": 1}
    # The job as queued: raw bytes as they arrived, the caller's deadline, trace and reply.
    assert envelope.kind == JobKind.JOB_KIND_INFER and envelope.infer.request_id == "r-1"
    assert envelope.infer.inputs[0].raw == x.tobytes()
    assert envelope.reply_to == rig.reply_key and envelope.tenant == ""
    assert dict(envelope.trace_context) == {"traceparent": TRACEPARENT}
    assert abs(envelope.deadline_unix_ms - (caller.asked_unix_s + 5.0) * 1000) <= 1


async def test_no_deadline_means_the_default_one(rig: Rig) -> None:
    before_ms = time.time() * 1000
    envelope = rig.plane.envelope(model_version(), Caller(), JobKind.JOB_KIND_EXPLAIN)
    assert envelope.kind == JobKind.JOB_KIND_EXPLAIN
    assert before_ms + 59_000 <= envelope.deadline_unix_ms <= time.time() * 1000 + 60_000


async def test_a_failed_job_is_raised_as_its_error(rig: Rig) -> None:
    def failed(started: Started) -> JobResult:
        return JobResult(state=JobState.JOB_STATE_FAILED, attempt=started.attempt,
                         error=JobError(code="INTERNAL", reason="JOB_FAILED",
                                        message="the model raised"))

    x = np.zeros((1, 4), np.float32)
    with pytest.raises(JobFailed, match="the model raised"):
        await asyncio.gather(rig.plane.infer(request(x), Caller(time_left_s=5.0)),
                             answer_one(rig.queue, failed))


async def test_a_deadline_passed_while_queued_never_runs(rig: Rig) -> None:
    x = np.zeros((1, 4), np.float32)
    with pytest.raises(DeadlineExceeded, match="no result within the deadline"):
        await rig.plane.infer(request(x), Caller(time_left_s=0.3))
    assert not (await rig.queue.claim("w-test", MODEL, 10)).runnable


async def test_a_caller_gone_cancels_its_queued_job(rig: Rig) -> None:
    x = np.zeros((1, 4), np.float32)
    waiting = asyncio.create_task(rig.plane.infer(request(x), Caller(time_left_s=30.0)))
    await until(lambda: queued(rig))
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not (await rig.queue.claim("w-test", MODEL, 10)).runnable


@pytest.mark.parametrize(("change", "error", "reason"), [
    ({"name": "nope"}, InvalidArgument, "INVALID_ARGUMENT"),
    ({"model": "no-such-model"}, ModelNotFound, "MODEL_NOT_FOUND"),
    ({"request_id": "r" * 129}, InvalidArgument, "INVALID_ARGUMENT"),
])
async def test_bad_requests_are_refused_before_anything_is_queued(
        rig: Rig, change: dict[str, str], error: type[Exception], reason: str) -> None:
    with pytest.raises(error) as caught:
        await rig.plane.infer(request(np.zeros((1, 4), np.float32), **change),
                              Caller(time_left_s=5.0))
    assert getattr(caught.value, "reason", None) == reason
    assert await queued(rig) == 0


async def test_an_unloaded_model_is_unavailable(rig: Rig) -> None:
    await rig.registry.set_unloaded(MODEL, True)
    with pytest.raises(ModelUnloaded):
        await rig.plane.infer(request(np.zeros((1, 4), np.float32)), Caller(time_left_s=5.0))


async def test_models_are_resolved_in_the_callers_tenant(rig: Rig) -> None:
    own = model_version(keys.model_id("acme", "private"))
    await rig.registry.add_version(own)
    x = np.zeros((1, 4), np.float32)
    with pytest.raises(ModelNotFound):
        await rig.plane.infer(request(x, model="private"), Caller("other", time_left_s=5.0))
    with pytest.raises(DeadlineExceeded):  # found (and queued: no worker serves it here)
        await rig.plane.infer(request(x, model="private"), Caller("acme", time_left_s=0.2))


async def test_too_large_a_request_is_resource_exhausted(redis_url: str) -> None:
    async with rig_of(redis_url, max_message_bytes=64) as r:
        with pytest.raises(MessageTooLarge, match="MAAS_MAX_MESSAGE_BYTES"):
            await r.plane.infer(request(np.zeros((4, 4), np.float32)), Caller())


async def test_no_live_worker_is_unavailable_when_required(redis_url: str) -> None:
    async with rig_of(redis_url, require_live_worker="on") as r:
        with pytest.raises(Unavailable) as caught:
            await r.plane.infer(request(np.zeros((1, 4), np.float32)), Caller())
        assert caught.value.reason == "NO_LIVE_WORKER" and await queued(r) == 0


async def test_a_version_no_live_worker_has_the_memory_for_is_refused(redis_url: str) -> None:
    async with rig_of(redis_url, require_live_worker="on") as r:
        large = model_version()
        large.weights_bytes = 2 * 1024 * 1024
        await r.registry.add_version(large)  # version 2, the latest
        await r.workers.beat(WorkerHeartbeat(worker_id="w-small",
                                             model_memory_budget_bytes=1024 * 1024),
                             ttl_ms=10_000)
        with pytest.raises(ModelTooLarge) as caught:
            await r.plane.infer(request(np.zeros((1, 4), np.float32)), Caller())
        assert caught.value.reason == "MODEL_TOO_LARGE" and await queued(r) == 0
        assert "MAAS_WORKER_MODEL_MEMORY_MB=1" in caught.value.message


async def test_placement_is_checked_again_for_another_version_and_new_records(
        redis_url: str) -> None:
    """Checks that passed are remembered for the worker records read (refreshed ~1 s): a
    version of the same model that does not fit is still refused, and so is the version that
    passed once the records say it no longer fits."""
    async with rig_of(redis_url, require_live_worker="on") as r:
        small = model_version()
        small.weights_bytes = 512 * 1024
        await r.registry.add_version(small)  # version 2
        large = model_version()
        large.weights_bytes = 2 * 1024 * 1024
        await r.registry.add_version(large)  # version 3
        await r.workers.beat(WorkerHeartbeat(worker_id="w-small",
                                             model_memory_budget_bytes=1024 * 1024),
                             ttl_ms=10_000)
        fits = request(np.zeros((1, 4), np.float32))
        fits.model_version = "2"
        for _ in range(2):  # the second call is answered from what the first checked
            with pytest.raises(DeadlineExceeded):  # queued: no worker runs it here
                await r.plane.infer(fits, Caller(time_left_s=0.2))
        too_large = request(np.zeros((1, 4), np.float32))
        too_large.model_version = "3"
        with pytest.raises(ModelTooLarge):
            await r.plane.infer(too_large, Caller(time_left_s=0.2))
        await r.workers.beat(WorkerHeartbeat(worker_id="w-small",
                                             model_memory_budget_bytes=256 * 1024),
                             ttl_ms=10_000)
        await asyncio.sleep(1.05)  # the records are read again
        with pytest.raises(ModelTooLarge):
            await r.plane.infer(fits, Caller(time_left_s=0.2))


async def test_a_refused_submit_is_set_on_the_callers_one_future(redis_url: str) -> None:
    """The coalescer answers a refusal on the future the call awaits (its reply's); an
    accepted job leaves it to the reply."""
    redis = connect(redis_url)
    queue = JobQueue(redis, max_depth=1)
    await queue.ensure_group(MODEL)
    submitter = SubmitCoalescer(queue)
    sending = asyncio.create_task(submitter.run())
    loop = asyncio.get_running_loop()
    try:
        accepted, refused = loop.create_future(), loop.create_future()
        for waiter in (accepted, refused):
            submitter.submit(JobEnvelope(job_id=new_job_id(), model=MODEL, model_version="1",
                                         max_attempts=1, reply_to="replies"), waiter)
        with pytest.raises(QueueFull):
            await asyncio.wait_for(refused, 5)
        assert not accepted.done() and await queued_in(redis) == 1
    finally:
        sending.cancel()
        await redis.aclose()


async def test_a_model_is_ready_once_a_live_worker_has_it_loaded(rig: Rig) -> None:
    assert not await rig.plane.model_ready("", MODEL)  # no worker (cached for a second)
    await asyncio.sleep(1.05)
    await rig.workers.beat(WorkerHeartbeat(worker_id="w-test", models=[f"{MODEL}:1"]),
                           ttl_ms=10_000)
    assert await rig.plane.model_ready("", MODEL, "1")
    rig.plane.is_ready = False  # draining
    assert not await rig.plane.model_ready("", MODEL)


async def test_metadata_describes_the_resolved_version(rig: Rig) -> None:
    meta = await rig.plane.metadata(pb.ModelMetadataRequest(name=MODEL), "")
    assert (meta.name, list(meta.versions), meta.platform) == (MODEL, ["1"], "pytorch")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 4])]


async def test_each_answer_is_counted_by_resolved_model(rig: Rig) -> None:
    def count() -> float:
        return REGISTRY.get_sample_value("maas_inference_request_success_total",
                                         {"model": MODEL, "version": "1"}) or 0.0

    before = count()
    x = np.zeros((1, 4), np.float32)
    await asyncio.gather(rig.plane.infer(request(x), Caller(time_left_s=5.0)),
                         answer_one(rig.queue))
    assert count() == before + 1
