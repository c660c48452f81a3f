"""maas.v1.InferenceService: asynchronous inference — submit now, fetch the result later."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc

from gateway.auth import caller
from gateway.bounds import check_deadline_ms, check_priority, check_request_id
from gateway.explain import Explainer
from gateway.submitter import refusal
from gateway.validation import check_message_size, infer_task
from maas.errors import (
    FailedPrecondition,
    FieldViolation,
    IdempotencyKeyReused,
    InvalidArgument,
    JobNotFound,
    shown,
)
from maas.inference import grpc_service_pb2 as v2
from maas.queue.v1.queue_pb2 import JobEnvelope, JobKind, JobResult
from maas.settings import Settings
from maas.v1 import inference_service_pb2 as pb
from maas.v1.inference_service_pb2_grpc import InferenceServiceServicer
from scheduler import keys
from scheduler.queue import JobQueue, SubmitStatus
from scheduler.registry import ModelRegistry, check_model_id

TERMINAL = {pb.InferenceJob.SUCCEEDED, pb.InferenceJob.FAILED, pb.InferenceJob.CANCELLED,
            pb.InferenceJob.EXPIRED, pb.InferenceJob.DEAD_LETTERED}


def _model_of(job_id: str) -> str:
    """Job ids are "<model id>:<hex>": model ids cannot contain ':'."""
    model, sep, rest = job_id.rpartition(":")
    if not sep or not rest:
        raise InvalidArgument(f"job_id {shown(job_id)} is not an inference job id "
                              "(<model>:<hex>)",
                              violations=(FieldViolation("job_id", "malformed"),))
    check_model_id(model, field="job_id")
    return model


def v2_request(request: pb.SubmitInferenceRequest) -> v2.ModelInferRequest:
    """The same checks as ModelInfer: the request as a v2 request with raw contents."""
    out = v2.ModelInferRequest(model_name=request.model, model_version=request.model_version)
    for t in request.inputs:
        out.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        out.raw_input_contents.append(t.raw)
    for name in request.outputs:
        out.outputs.add(name=name)
    return out


class JobServicer(InferenceServiceServicer):
    def __init__(self, settings: Settings, queue: JobQueue, registry: ModelRegistry,
                 explainer: Explainer) -> None:
        self._settings = settings
        self._queue = queue
        self._registry = registry
        self._explainer = explainer

    async def Explain(self, request: pb.ExplainRequest,
                      context: grpc.aio.ServicerContext) -> pb.ExplainResponse:
        """Attributions computed on a worker (gateway/explain.py, worker/explain.py)."""
        return await self._explainer.explain(request, context)

    async def SubmitInference(self, request: pb.SubmitInferenceRequest,
                              context: grpc.aio.ServicerContext) -> pb.SubmitInferenceResponse:
        check_message_size(request, self._settings.max_message_bytes)
        check_request_id(request.request_id)
        check_deadline_ms(request.deadline_ms)
        check_priority(request.priority)
        tenant = caller().tenant
        version = await self._registry.resolve_visible(tenant, request.model,
                                                       request.model_version)
        await self._registry.check_serving(version)  # UNAVAILABLE once unloaded
        now_ms = int(time.time() * 1000)
        window_ms = request.deadline_ms or int(self._settings.default_deadline_s * 1000)
        envelope = JobEnvelope(
            job_id=f"{version.model}:{uuid.uuid4().hex}", kind=JobKind.JOB_KIND_INFER,
            model=version.model, model_version=version.version, priority=request.priority,
            tenant=tenant,
            idempotency_key=request.request_id, deadline_unix_ms=now_ms + window_ms,
            enqueue_unix_ms=now_ms, max_attempts=self._settings.max_attempts,
            result_ttl_ms=int(self._settings.result_ttl_s * 1000),
            infer=infer_task(v2_request(request), version,
                             max_elements=self._settings.max_tensor_elements))
        status, job_id = await self._queue.submit(envelope)
        if error := refusal(self._queue, envelope, status, job_id):
            raise error
        if status == SubmitStatus.MISMATCH:
            raise IdempotencyKeyReused(f"request_id {shown(request.request_id)} was used for a "
                                       f"different request (job {job_id})")
        job = await self._job(job_id)
        job.request_id = request.request_id
        return pb.SubmitInferenceResponse(job=job)

    async def _job(self, job_id: str) -> pb.InferenceJob:
        model = _model_of(job_id)
        fields = await self._queue.job_state(model, job_id)
        if not fields or fields.get("tenant", b"").decode() != caller().tenant:
            raise JobNotFound(f"no job {shown(job_id)} (finished jobs are kept "
                              f"{self._settings.result_ttl_s:.0f}s)")
        job = pb.InferenceJob(job_id=job_id, model=keys.split_model_id(model)[1],
                              model_version=fields.get("version", b"").decode(),
                              state=pb.InferenceJob.State.Value(fields["state"].decode()),
                              attempts=int(fields.get("attempt", b"0")))
        job.create_time.FromMilliseconds(int(fields.get("created_ms", b"0")))
        if fields.get("result"):
            result = JobResult.FromString(fields["result"])
            job.outputs.extend(pb.Tensor(name=t.name, datatype=t.datatype, shape=t.shape,
                                         raw=t.raw) for t in result.infer.outputs)
            if result.HasField("error"):
                job.error.CopyFrom(pb.JobError(code=result.error.code,
                                               reason=result.error.reason,
                                               message=result.error.message))
        elif "error_code" in fields:
            job.error.CopyFrom(pb.JobError(code=fields["error_code"].decode(),
                                           reason=fields["error_reason"].decode(),
                                           message=fields["error_message"].decode()))
        return job

    async def GetJob(self, request: pb.GetJobRequest,
                     context: grpc.aio.ServicerContext) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=await self._job(request.job_id))

    async def WaitJob(self, request: pb.WaitJobRequest,
                      context: grpc.aio.ServicerContext) -> pb.WaitJobResponse:
        if request.timeout_ms < 0:
            raise InvalidArgument(f"timeout_ms must be >= 0 (0 = until the call's deadline); "
                                  f"got {request.timeout_ms}",
                                  violations=(FieldViolation("timeout_ms", "negative"),))
        remaining = context.time_remaining()
        budget_s = min(x for x in (remaining, request.timeout_ms / 1000 or None,
                                   self._settings.default_deadline_s) if x is not None)
        give_up = time.monotonic() + max(0.0, budget_s - 0.05)
        pause_s = 0.005
        while True:
            job = await self._job(request.job_id)
            if job.state in TERMINAL or time.monotonic() + pause_s > give_up:
                return pb.WaitJobResponse(job=job)
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.2)

    async def CancelJob(self, request: pb.CancelJobRequest,
                        context: grpc.aio.ServicerContext) -> pb.CancelJobResponse:
        model = _model_of(request.job_id)
        await self._job(request.job_id)  # NOT_FOUND: no such job, or not the caller's
        if not await self._queue.cancel(model, request.job_id):
            job = await self._job(request.job_id)
            raise FailedPrecondition(f"job {request.job_id} already ended "
                                     f"({pb.InferenceJob.State.Name(job.state)})",
                                     reason="JOB_ALREADY_FINISHED")
        return pb.CancelJobResponse(job=await self._job(request.job_id))
