"""AsyncJobs: asynchronous inference — submit now, read, wait for or cancel the job later.

Transport-free: it takes and returns maas.v1 protobufs and the caller's tenant; the servicer
(gateway/jobs.py) only translates. A job belongs to its tenant: read by another, it does not
exist. A job is queued whether or not a worker is live, but not one that the live workers
serving its model all lack the memory for (MODEL_TOO_LARGE, gateway/plane/placement.py).
Jobs are read as JobViews (scheduler/job_view.py), the one decoding of the job hash.
"""

from __future__ import annotations

import asyncio
import time

from gateway.bounds import check_deadline_ms, check_priority, check_request_id
from gateway.plane.placement import check_room
from gateway.validation import check_message_size, infer_task
from maas.errors import (
    FieldViolation,
    InvalidArgument,
    JobAlreadyFinished,
    JobNotFound,
    shown,
)
from maas.inference import grpc_service_pb2 as v2
from maas.v1 import inference_service_pb2 as pb
from runtime.queue.v1.queue_pb2 import JobEnvelope, JobKind
from runtime.settings import Settings
from scheduler import keys
from scheduler.job_view import JobReader, JobView, addressed_job_id, model_of_job_id
from scheduler.queue import JobQueue, new_job_id
from scheduler.registry import ModelRegistry, check_model_id
from scheduler.workers import WorkerDirectory

# WaitJob: answered this long before its budget ends; polls back off from the first pause.
WAIT_MARGIN_S = 0.05
FIRST_PAUSE_S = 0.005
MAX_PAUSE_S = 0.2


def model_of(job_id: str) -> str:
    """The queue of an inference job id ("<model id>:<hex>", or "<model id>#<n>:<hex>" on a
    shard of a sharded model: scheduler/shards.py); INVALID_ARGUMENT otherwise."""
    queue = model_of_job_id(job_id)
    if queue is None or keys.shard_of_queue(queue) is None:
        raise InvalidArgument(f"job_id {shown(job_id)} is not an inference job id "
                              "(<model>:<hex>)",
                              violations=(FieldViolation("job_id", "malformed"),))
    check_model_id(keys.model_of_queue(queue), field="job_id")
    return queue


def v2_request(request: pb.SubmitInferenceRequest) -> v2.ModelInferRequest:
    """The same checks as ModelInfer: the request as a v2 request with raw contents."""
    out = v2.ModelInferRequest(model_name=request.model, model_version=request.model_version)
    for t in request.inputs:
        out.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        out.raw_input_contents.append(t.raw)
    for name in request.outputs:
        out.outputs.add(name=name)
    return out


def inference_job(view: JobView) -> pb.InferenceJob:
    """The job as its tenant sees it: the model by name, outputs once SUCCEEDED, the error."""
    job = pb.InferenceJob(job_id=view.job_id,
                          model=keys.split_model_id(keys.model_of_queue(view.model))[1],
                          model_version=view.version,
                          state=pb.InferenceJob.State.Value(view.state_name),
                          attempts=view.attempt)
    job.create_time.FromMilliseconds(view.created_ms)
    if view.result is not None:
        job.outputs.extend(pb.Tensor(name=t.name, datatype=t.datatype, shape=t.shape, raw=t.raw)
                           for t in view.result.infer.outputs)
    if view.error is not None:
        job.error.CopyFrom(pb.JobError(code=view.error.code, reason=view.error.reason,
                                       message=view.error.message))
    return job


class AsyncJobs:
    def __init__(self, settings: Settings, queue: JobQueue, registry: ModelRegistry,
                 reader: JobReader | None = None, workers: WorkerDirectory | None = None,
                 ) -> None:
        self._settings = settings
        self._queue = queue
        self._registry = registry
        self._reader = reader or JobReader.of(queue)
        # Read for placement (MAAS_REQUIRE_LIVE_WORKER=on); None: nothing is checked.
        self._workers = workers if settings.require_live_worker == "on" else None

    async def _envelope(self, request: pb.SubmitInferenceRequest, tenant: str) -> JobEnvelope:
        """The request checked (bounds, the model's visibility and serving, its tensors)."""
        check_message_size(request, self._settings.max_message_bytes)
        check_request_id(request.request_id)
        check_deadline_ms(request.deadline_ms)
        check_priority(request.priority)
        version = await self._registry.resolve_visible(tenant, request.model,
                                                       request.model_version)
        await self._registry.check_serving(version)  # UNAVAILABLE once unloaded
        if self._workers is not None:
            check_room(await self._workers.live(), version)
        now_ms = int(time.time() * 1000)
        window_ms = request.deadline_ms or int(self._settings.default_deadline_s * 1000)
        # A sharded model: the queue its request_id hashes to (a retry meets its first
        # submit), else the next in turn; the job id names it (scheduler/shards.py).
        queue = self._queue.shards.pick(version.model, request.request_id)
        return JobEnvelope(
            job_id=addressed_job_id(queue, new_job_id()), kind=JobKind.JOB_KIND_INFER,
            queue=keys.queue_field(version.model, queue),
            model=version.model, model_version=version.version, priority=request.priority,
            tenant=tenant, idempotency_key=request.request_id,
            deadline_unix_ms=now_ms + window_ms, enqueue_unix_ms=now_ms,
            max_attempts=self._settings.max_attempts,
            result_ttl_ms=int(self._settings.result_ttl_s * 1000),
            infer=infer_task(v2_request(request), version,
                             max_elements=self._settings.max_tensor_elements))

    async def submit(self, request: pb.SubmitInferenceRequest, tenant: str) -> pb.InferenceJob:
        """Queues the job (or finds the one of the same request_id) and returns it."""
        envelope = await self._envelope(request, tenant)
        _, job_id = await self._queue.submit(envelope)  # raises a refusal (QueueFull, ...)
        job = await self.get(job_id, tenant)
        job.request_id = request.request_id
        return job

    async def view(self, job_id: str, tenant: str) -> JobView:
        """The tenant's job; NOT_FOUND when there is none or it is another tenant's."""
        found = await self._reader.read(model_of(job_id), job_id)
        if found is None or found.tenant != tenant:
            raise JobNotFound(f"no job {shown(job_id)} (finished jobs are kept "
                              f"{self._settings.result_ttl_s:.0f}s)")
        return found

    async def get(self, job_id: str, tenant: str) -> pb.InferenceJob:
        return inference_job(await self.view(job_id, tenant))

    async def wait(self, job_id: str, tenant: str, timeout_ms: int,
                   time_remaining_s: float | None) -> pb.InferenceJob:
        """The job once it ended, or as it is when the wait runs out: `timeout_ms` (0 = no
        limit of its own), the call's remaining time, at most MAAS_DEFAULT_DEADLINE_S."""
        if timeout_ms < 0:
            raise InvalidArgument(f"timeout_ms must be >= 0 (0 = until the call's deadline); "
                                  f"got {timeout_ms}",
                                  violations=(FieldViolation("timeout_ms", "negative"),))
        budget_s = min(x for x in (time_remaining_s, timeout_ms / 1000 or None,
                                   self._settings.default_deadline_s) if x is not None)
        give_up = time.monotonic() + max(0.0, budget_s - WAIT_MARGIN_S)
        pause_s = FIRST_PAUSE_S
        while True:
            view = await self.view(job_id, tenant)
            if view.is_terminal or time.monotonic() + pause_s > give_up:
                return inference_job(view)
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, MAX_PAUSE_S)

    async def cancel(self, job_id: str, tenant: str) -> pb.InferenceJob:
        """Cancels a queued job, or flags a running one (its result is dropped);
        FAILED_PRECONDITION (JOB_ALREADY_FINISHED) once it ended."""
        await self.view(job_id, tenant)  # NOT_FOUND: no such job, or not the tenant's
        if not await self._queue.cancel(model_of(job_id), job_id):
            view = await self.view(job_id, tenant)
            raise JobAlreadyFinished(f"job {job_id} already ended ({view.state_name})")
        return await self.get(job_id, tenant)
