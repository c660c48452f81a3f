"""InferencePlane: v2 inference without a transport. A request and its `Caller` in, a response
out; the v2 servicer (gateway/inference.py), the Explainer and health only translate.

- `infer`: bounds, the model as the caller's tenant sees it (serving, a live worker that
  serves it and has the memory for it), the request checked and queued as one job whose
  reply comes to this gateway, then its result.
- `run_job`: a job built elsewhere (Explain) waited for as `infer` waits for its own.
- `model_ready`, `metadata`: v2 ModelReady (and health `model/<name>`), ModelMetadata.

Errors are MaasErrors, answered by gateway/errors.py. Per request nothing goes to Redis but
the submit (the registry and worker liveness are read from caches), and the request's raw
tensors travel as the bytes that arrived, checked, never decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.bounds import MAX_REQUEST_ID_BYTES, check_request_id
from gateway.observe import observe_infer
from gateway.plane.model_config import model_config
from gateway.plane.placement import check_room
from gateway.replies import ReplyDispatcher
from gateway.submitter import SubmitCoalescer
from gateway.validation import check_message_size, infer_task, priority_of
from maas.errors import (
    DeadlineExceeded,
    NoLiveWorker,
    NoWorkerForModel,
    QueueUnreachable,
    by_code_name,
)
from maas.inference import grpc_service_pb2 as pb
from maas.v1.model_service_pb2 import ModelVersion
from runtime.queue.v1.queue_pb2 import JobEnvelope, JobKind, JobResult, JobState
from runtime.settings import Settings
from runtime.tracing import trace_id
from scheduler.connection import TRANSIENT_ERRORS
from scheduler.keys import queue_field, split_model_id
from scheduler.queue import new_job_id, queue_of
from scheduler.registry import ModelRegistry, is_servable
from scheduler.workers import WorkerDirectory, serves

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
_SUCCEEDED = JobState.JOB_STATE_SUCCEEDED
_INFER = JobKind.JOB_KIND_INFER


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls and until when, as its transport said: the tenant, the seconds its deadline
    was away at `asked_unix_s` (None: it set none, and MAAS_DEFAULT_DEADLINE_S counts from
    when its job is made), and its W3C trace headers (`traceparent`, `tracestate`)."""

    tenant: str = ""
    time_left_s: float | None = None
    trace_context: Mapping[str, str] = field(default_factory=dict)
    asked_unix_s: float = field(default_factory=time.time)


class InferencePlane:
    def __init__(self, settings: Settings, submitter: SubmitCoalescer, registry: ModelRegistry,
                 workers: WorkerDirectory, replies: ReplyDispatcher) -> None:
        self._settings = settings
        self._submitter = submitter
        self._queue = submitter.queue
        self._registry = registry
        self._workers = workers
        self._replies = replies
        self._cancelling = asyncio.Semaphore(MAX_CONCURRENT_CANCELS)
        # The live worker records `require_live_worker` last read, and the versions that
        # passed its checks against them: the next call of such a version skips the checks.
        self._placed: tuple[object, set[tuple[str, str]]] = (None, set())
        self.is_ready = True  # False once the gateway drains: ServerReady, ModelReady

    async def infer(self, request: pb.ModelInferRequest, caller: Caller) -> pb.ModelInferResponse:
        """The result of one v2 request, run by a worker within the caller's deadline."""
        settings = self._settings
        # (the id is checked below; until then logs carry no more of it than it may hold)
        with observe_infer(request.id[:MAX_REQUEST_ID_BYTES], request.model_name) as call:
            check_message_size(request, settings.max_message_bytes)
            check_request_id(request.id, "id")
            version = await self._registry.resolve_visible(caller.tenant, request.model_name,
                                                           request.model_version)
            await self._registry.check_serving(version)  # UNAVAILABLE once unloaded
            call.resolved(version)
            await self.require_live_worker(version)
            envelope = self.envelope(version, caller, _INFER, priority_of(request))
            envelope.queue = self._sharded(version.model)
            infer_task(request, version, max_elements=settings.max_tensor_elements,
                       into=envelope.infer)
            call.running(envelope.job_id, caller.tenant, trace_id(caller.trace_context))
            return _response(request, version.version, await self._run(envelope))

    def envelope(self, version: ModelVersion, caller: Caller, kind: JobKind.ValueType,
                 priority: int = 0) -> JobEnvelope:
        """The envelope of a job a caller waits for: its tenant, deadline (or the default)
        and trace context; `run_job` addresses the reply to this gateway."""
        now_ms = int(time.time() * 1000)
        deadline_ms = (now_ms + int(self._settings.default_deadline_s * 1000)
                       if caller.time_left_s is None
                       else int((caller.asked_unix_s + caller.time_left_s) * 1000))
        return JobEnvelope(
            job_id=new_job_id(), kind=kind, model=version.model,
            model_version=version.version, tenant=caller.tenant, priority=priority,
            deadline_unix_ms=deadline_ms, enqueue_unix_ms=now_ms,
            max_attempts=self._settings.max_attempts, trace_context=caller.trace_context)

    def _sharded(self, model: str) -> str:
        """The queue of a sharded model this synchronous call's job goes to (it has no
        idempotency key): the same for every job of the next pipeline, the next queue for
        the pipeline after, so a pipeline costs one script call and a worker finds its jobs
        together, and the queues take turns (scheduler/shards.py). "" = the model's own."""
        return queue_field(model, self._queue.shards.pick(model, turn=self._submitter.flushes))

    async def run_job(self, envelope: JobEnvelope, version: ModelVersion) -> JobResult:
        """Runs a job built elsewhere (Explain) of `version` as an inference runs: the reply
        comes to this gateway; deadline, cancellation and errors as in `infer`."""
        await self.require_live_worker(version)
        return await self._run(envelope)

    async def model_ready(self, tenant: str, name: str, version: str = "") -> bool:
        """Serving, and a live worker has the version loaded (an archive: a worker runs its
        runner): v2 ModelReady and health `model/<name>`."""
        resolved = await self._registry.resolve_visible(tenant, name, version)
        loaded = f"{resolved.model}:{resolved.version}"
        if not is_servable(resolved) or await self._registry.is_unloaded(resolved.model):
            return False
        workers = await self._workers.live()
        return self.is_ready and any(loaded in w.models for w in workers)

    async def metadata(self, request: pb.ModelMetadataRequest,
                       tenant: str) -> pb.ModelMetadataResponse:
        version = await self._registry.resolve_visible(tenant, request.name, request.version)
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

    async def model_config(self, request: pb.ModelConfigRequest,
                           tenant: str) -> pb.ModelConfigResponse:
        """Triton's ModelConfig of the version the caller names (NOT_FOUND as metadata)."""
        version = await self._registry.resolve_visible(tenant, request.name, request.version)
        return pb.ModelConfigResponse(config=model_config(
            request.name, version, version.platform or PLATFORM, self._settings.max_batch_size))

    async def require_live_worker(self, version: ModelVersion) -> None:
        """UNAVAILABLE + retry delay when no worker has been alive for a while, or when live
        workers are there but none serves the model (MAAS_WORKER_MODELS pins them elsewhere);
        FAILED_PRECONDITION (MODEL_TOO_LARGE) when those that serve it all lack the model
        memory for the version (MAAS_REQUIRE_LIVE_WORKER=on): a synchronous caller would only
        wait out its deadline, or get the same failure from a worker. Async jobs are queued
        whatever the liveness (AsyncJobs checks the memory only). Both reads are cached."""
        if self._settings.require_live_worker == "off":
            return
        model = version.model
        within_s = NO_WORKER_GRACE_S
        if not await self._workers.any_seen(within_s) and \
                not await self._workers.any_seen(within_s, max_age_s=0):  # one just started?
            name = split_model_id(model)[1]
            raise NoLiveWorker(
                f"no worker has been alive for {within_s:.0f}s to run model {name!r}: start "
                "one (`maas worker`, or `maas up`) and retry; MAAS_REQUIRE_LIVE_WORKER=off "
                "queues requests instead", retry_delay_s=2.0)
        live = await self._workers.live()
        fits = (model, version.version)
        if live is self._placed[0] and fits in self._placed[1]:
            return  # checked against these very records already (they change every ~1 s)
        # No live record while workers were seen lately (a Redis outage lapses them all):
        # nothing is known of what they serve, so the request is queued.
        if live and not any(serves(w.serves, model) for w in live):
            name = split_model_id(model)[1]
            raise NoWorkerForModel(
                f"no live worker serves model {name!r}: every worker is pinned to other models "
                "by MAAS_WORKER_MODELS; start a worker whose MAAS_WORKER_MODELS names it (or "
                "is empty: every model) and retry", retry_delay_s=2.0)
        check_room(live, version)
        if live is not self._placed[0]:
            self._placed = (live, set())
        self._placed[1].add(fits)

    async def _run(self, envelope: JobEnvelope) -> JobResult:
        """Submits the job and waits for its one result until the deadline; a job whose
        caller is gone (deadline, cancellation) and that has not started never runs.
        The answer comes just before the caller's deadline: DEADLINE_EXCEEDED, or
        UNAVAILABLE when it is Redis that did not answer (an outage)."""
        queue = queue_of(envelope)  # replies come in the queue's slot
        envelope.reply_to = self._replies.reply_key(queue)
        future = self._replies.expect(envelope.job_id, queue)
        left_s = max(0.0, envelope.deadline_unix_ms / 1000 - time.time())
        # The deadline sets TimeoutError on the one future the call awaits (cheaper per call
        # than an asyncio.timeout around it: no task cancellation to undo).
        timer = asyncio.get_running_loop().call_later(
            left_s - min(ANSWER_MARGIN_S, left_s / 10), _expire, future)
        try:
            try:
                self._submitter.submit(envelope, future)  # a refusal (QueueFull) is set on it
                result = await future
            except TimeoutError:
                # No cancel when Redis is away: it would wait for Redis too.
                if not self._replies.is_reading(queue):
                    raise QueueUnreachable(
                        f"Redis did not answer within the deadline ({left_s:.3f}s): the queue "
                        "is unreachable; the request will not run after its deadline; retry "
                        "shortly", retry_delay_s=1.0) from None
                await self._end_queued(envelope, "EXPIRED")
                raise DeadlineExceeded(
                    f"no result within the deadline ({left_s:.3f}s left at submit); "
                    "the job will not run once its deadline has passed") from None
            except asyncio.CancelledError:  # the caller went away (or its deadline passed)
                expired = time.time() * 1000 >= envelope.deadline_unix_ms
                await self._end_queued(envelope, "EXPIRED" if expired else "CANCELLED")
                raise
        finally:
            timer.cancel()
            self._replies.forget(envelope.job_id)
        if result.state != _SUCCEEDED:
            raise by_code_name(result.error.code, result.error.message, result.error.reason)
        return result

    async def _end_queued(self, envelope: JobEnvelope, state: str) -> None:
        """Best effort: if Redis is away, START still expires the job by its deadline."""
        async with self._cancelling:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._queue.cancel_queued(queue_of(envelope), envelope.job_id, state)


def _expire(future: asyncio.Future[JobResult]) -> None:
    """A call's deadline (less the answer margin) has come: its wait ends with TimeoutError."""
    if not future.done():
        future.set_exception(TimeoutError())


def _response(request: pb.ModelInferRequest, version: str,
              result: JobResult) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=request.model_name, model_version=version,
                                     id=request.id)
    outputs, raws = response.outputs, response.raw_output_contents
    for t in result.infer.outputs:
        outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        raws.append(t.raw)
    # How the job ran, for dashboards and tests: clients that don't know them ignore them.
    parameters = response.parameters
    parameters["maas_batch_size"].int64_param = result.batch_size
    parameters["maas_queue_us"].int64_param = result.queue_us
    parameters["maas_compute_us"].int64_param = result.compute_us
    parameters["maas_attempt"].int64_param = result.attempt
    return response
