"""maas.v1.InferenceService: asynchronous inference — submit now, fetch the result later.

Translation only: the work is AsyncJobs' (gateway/plane/jobs.py) and the Explainer's.
"""

from __future__ import annotations

import grpc

from gateway.auth import caller
from gateway.explain import Explainer
from gateway.plane.jobs import AsyncJobs
from maas.v1 import inference_service_pb2 as pb
from maas.v1.inference_service_pb2_grpc import InferenceServiceServicer
from runtime.settings import Settings
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry
from scheduler.workers import WorkerDirectory


class JobServicer(InferenceServiceServicer):
    def __init__(self, settings: Settings, queue: JobQueue, registry: ModelRegistry,
                 explainer: Explainer, workers: WorkerDirectory) -> None:
        self._jobs = AsyncJobs(settings, queue, registry, workers=workers)
        self._explainer = explainer

    async def Explain(self, request: pb.ExplainRequest,
                      context: grpc.aio.ServicerContext) -> pb.ExplainResponse:
        """Attributions computed on a worker (gateway/explain.py, worker/explain.py)."""
        return await self._explainer.explain(request, context)

    async def SubmitInference(self, request: pb.SubmitInferenceRequest,
                              context: grpc.aio.ServicerContext) -> pb.SubmitInferenceResponse:
        return pb.SubmitInferenceResponse(job=await self._jobs.submit(request, caller().tenant))

    async def GetJob(self, request: pb.GetJobRequest,
                     context: grpc.aio.ServicerContext) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=await self._jobs.get(request.job_id, caller().tenant))

    async def WaitJob(self, request: pb.WaitJobRequest,
                      context: grpc.aio.ServicerContext) -> pb.WaitJobResponse:
        job = await self._jobs.wait(request.job_id, caller().tenant, request.timeout_ms,
                                    context.time_remaining())
        return pb.WaitJobResponse(job=job)

    async def CancelJob(self, request: pb.CancelJobRequest,
                        context: grpc.aio.ServicerContext) -> pb.CancelJobResponse:
        return pb.CancelJobResponse(job=await self._jobs.cancel(request.job_id, caller().tenant))
