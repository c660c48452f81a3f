"""The KServe v2 / Triton GRPCInferenceService: translation only; the queue does the work."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc

from gateway.auth import call_guard, caller
from gateway.bounds import MAX_REQUEST_ID_BYTES, check_request_id
from gateway.observe import InferCall, observe_infer
from gateway.replies import ReplyDispatcher
from gateway.repository import ModelRepository
from gateway.streaming import stream_infer
from gateway.submitter import SubmitCoalescer, refusal
from gateway.validation import check_message_size, infer_task, priority_of
from maas import __version__
from maas.artifacts import ArtifactStore
from maas.errors import DeadlineExceeded, Unavailable, by_code_name
from maas.inference import grpc_service_pb2 as pb
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceServicer
from maas.logs import log_context
from maas.queue.v1.queue_pb2 import JobEnvelope, JobKind, JobResult, JobState
from maas.settings import Settings
from maas.tracing import from_metadata, trace_id
from maas.v1.model_service_pb2 import ModelVersion
from scheduler.connection import TRANSIENT_ERRORS
from scheduler.queue import new_job_id
from scheduler.registry import ModelRegistry, is_servable
from scheduler.workers import WorkerDirectory

PLATFORM = "pytorch"
# Cancels sent to Redis at once: a burst (a stream cancelled, many deadlines passing together)
# must wait for a connection rather than exhaust the pool and leave jobs queued.
MAX_CONCURRENT_CANCELS = 16


# The answer to a call that runs out of time is sent this long before its deadline, so that
# the caller reads why (UNAVAILABLE when Redis is away) rather than its own DEADLINE_EXCEEDED.
ANSWER_MARGIN_S = 0.05
# Workers count as gone only once none has beaten for this long: a Redis outage lapses
# every heartbeat record at once, while the workers are still there.
NO_WORKER_GRACE_S = 5.0

class InferenceServicer(GRPCInferenceServiceServicer):
    def __init__(self, settings: Settings, submitter: SubmitCoalescer, registry: ModelRegistry,
                 workers: WorkerDirectory, replies: ReplyDispatcher, reply_key: str) -> None:
        self._settings = settings
        self._submitter = submitter
        self._queue = submitter.queue
        self._registry = registry
        self._workers = workers
        self._replies = replies
        self._reply_key = reply_key
        self._repository = ModelRepository(registry, self._queue,
                                           ArtifactStore(settings.artifact_dir),
                                           settings.verify_timeout_s)
        self.is_ready = True
        self._cancelling = asyncio.Semaphore(MAX_CONCURRENT_CANCELS)

    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.is_ready)

    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=await self.model_ready(request.name, request.version))

    async def model_ready(self, name: str, version: str = "") -> bool:
        """Serving, and a live worker has the version loaded (an archive: a worker runs its
        runner) (also health `model/<name>`)."""
        resolved = await self._registry.resolve_visible(caller().tenant, name, version)
        loaded = f"{resolved.model}:{resolved.version}"
        if not is_servable(resolved) or await self._registry.is_unloaded(resolved.model):
            return False
        workers = await self._workers.live()
        return self.is_ready and any(loaded in w.models for w in workers)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest,
                              context: grpc.aio.ServicerContext) -> pb.RepositoryIndexResponse:
        return await self._repository.index(request)

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: grpc.aio.ServicerContext
                                  ) -> pb.RepositoryModelLoadResponse:
        return await self._repository.load(request)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> pb.RepositoryModelUnloadResponse:
        return await self._repository.unload(request)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="maas", version=__version__, extensions=[])

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        version = await self._registry.resolve_visible(caller().tenant, request.name,
                                                       request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=await self._registry.version_numbers(version.model),
            platform=version.platform or PLATFORM,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape)
                    for t in version.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape)
                     for t in version.outputs],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        # (the id is checked in _infer; until then logs carry no more of it than it may hold)
        with observe_infer(request.id[:MAX_REQUEST_ID_BYTES], request.model_name) as call:
            return await self._infer(request, context, call)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext,
                               ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Pipelined ModelInfer calls on one stream, errors in-band (gateway/streaming.py)."""
        async with contextlib.aclosing(stream_infer(request_iterator, context, self.ModelInfer,
                                                    call_guard())) as responses:
            async for response in responses:
                yield response

    async def _infer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext,
                     call: InferCall) -> pb.ModelInferResponse:
        check_message_size(request, self._settings.max_message_bytes)
        check_request_id(request.id, "id")
        version = await self._registry.resolve_visible(caller().tenant, request.model_name,
                                                       request.model_version)
        await self._registry.check_serving(version)  # UNAVAILABLE once unloaded
        call.resolved(version)
        await self._require_live_worker(request.model_name)
        envelope = call_envelope(self._settings, version, context, JobKind.JOB_KIND_INFER,
                                 priority_of(request))
        envelope.infer.CopyFrom(infer_task(request, version,
                                           max_elements=self._settings.max_tensor_elements))
        with log_context(job_id=envelope.job_id, tenant=envelope.tenant,
                         trace_id=trace_id(envelope.trace_context)):
            result = await self._run(envelope)
        return _response(request, version.version, result)

    async def _require_live_worker(self, model: str) -> None:
        """UNAVAILABLE + retry delay when no worker has been alive for a while
        (MAAS_REQUIRE_LIVE_WORKER=on): a synchronous caller would only wait out its deadline.
        Async jobs are queued anyway."""
        if self._settings.require_live_worker == "off":
            return
        within_s = NO_WORKER_GRACE_S
        if await self._workers.any_seen(within_s):
            return
        if not await self._workers.any_seen(within_s, max_age_s=0):  # one may have just started
            raise Unavailable(
                f"no worker has been alive for {within_s:.0f}s to run model {model!r}: start "
                "one (`maas worker`, or `maas up`) and retry; MAAS_REQUIRE_LIVE_WORKER=off "
                "queues requests instead", reason="NO_LIVE_WORKER", retry_delay_s=2.0)

    async def run_job(self, envelope: JobEnvelope) -> JobResult:
        """Runs a job built elsewhere (Explain) as an inference runs: the reply comes to this
        gateway; deadline, cancellation and errors as in ModelInfer."""
        await self._require_live_worker(envelope.model)
        return await self._run(envelope)

    async def _run(self, envelope: JobEnvelope) -> JobResult:
        """Submits the job and waits for its one result until the deadline; a job whose
        caller is gone (deadline, cancellation) and that has not started never runs.
        The answer comes just before the caller's deadline: DEADLINE_EXCEEDED, or
        UNAVAILABLE when it is Redis that did not answer (an outage)."""
        envelope.reply_to = self._reply_key
        future = self._replies.expect(envelope.job_id)
        left_s = max(0.0, envelope.deadline_unix_ms / 1000 - time.time())
        try:
            try:
                async with asyncio.timeout(left_s - min(ANSWER_MARGIN_S, left_s / 10)):
                    status, detail = await self._submitter.submit(envelope)
                    if error := refusal(self._queue, envelope, status, detail):
                        raise error
                    result = await future
            except TimeoutError:
                if not self._replies.is_reading:  # no cancel: it would wait for Redis too
                    raise Unavailable(
                        f"Redis did not answer within the deadline ({left_s:.3f}s): the queue "
                        "is unreachable; the request will not run after its deadline; retry "
                        "shortly", reason="QUEUE_UNREACHABLE", retry_delay_s=1.0) from None
                await self._end_queued(envelope, "EXPIRED")
                raise DeadlineExceeded(
                    f"no result within the deadline ({left_s:.3f}s left at submit); "
                    "the job will not run once its deadline has passed") from None
            except asyncio.CancelledError:  # the caller went away (or its deadline passed)
                expired = time.time() * 1000 >= envelope.deadline_unix_ms
                await self._end_queued(envelope, "EXPIRED" if expired else "CANCELLED")
                raise
        finally:
            self._replies.forget(envelope.job_id)
        if result.state != JobState.JOB_STATE_SUCCEEDED:
            raise by_code_name(result.error.code, result.error.message, result.error.reason)
        return result

    async def _end_queued(self, envelope: JobEnvelope, state: str) -> None:
        """Best effort: if Redis is away, START still expires the job by its deadline."""
        async with self._cancelling:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._queue.cancel_queued(envelope.model, envelope.job_id, state)


def call_envelope(settings: Settings, version: ModelVersion,
                  context: grpc.aio.ServicerContext, kind: JobKind.ValueType,
                  priority: int = 0) -> JobEnvelope:
    """The envelope of a job a call waits for: the caller's tenant, deadline (or the default)
    and trace context; `run_job`/`_run` address the reply to this gateway."""
    now_ms = int(time.time() * 1000)
    remaining = context.time_remaining()
    timeout_s = settings.default_deadline_s if remaining is None else remaining
    return JobEnvelope(
        job_id=new_job_id(), kind=kind, model=version.model,  # the id
        model_version=version.version, tenant=caller().tenant, priority=priority,
        deadline_unix_ms=now_ms + int(timeout_s * 1000), enqueue_unix_ms=now_ms,
        max_attempts=settings.max_attempts,
        trace_context=from_metadata(context.invocation_metadata()))


def _response(request: pb.ModelInferRequest, version: str,
              result: JobResult) -> pb.ModelInferResponse:
    outputs = result.infer.outputs
    response = pb.ModelInferResponse(
        model_name=request.model_name, model_version=version, id=request.id,
        outputs=[pb.ModelInferResponse.InferOutputTensor(
            name=t.name, datatype=t.datatype, shape=t.shape) for t in outputs],
        raw_output_contents=[t.raw for t in outputs],
    )
    # How the job ran, for dashboards and tests: clients that don't know them ignore them.
    response.parameters["maas_batch_size"].int64_param = result.batch_size
    response.parameters["maas_queue_us"].int64_param = result.queue_us
    response.parameters["maas_compute_us"].int64_param = result.compute_us
    response.parameters["maas_attempt"].int64_param = result.attempt
    return response
