"""maas.v1.TrainingService: translation only; the work is Training's
(gateway/plane/training.py): spec checks at the door, the queue, the job's events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from gateway.auth import caller
from gateway.plane.training import Training
from maas.v1 import training_service_pb2 as pb
from maas.v1.training_service_pb2_grpc import TrainingServiceServicer
from runtime.settings import Settings
from scheduler.datasets import DatasetStore
from scheduler.registry import ModelRegistry
from scheduler.training import TrainingStore


class TrainingServicer(TrainingServiceServicer):
    def __init__(self, settings: Settings, store: TrainingStore, registry: ModelRegistry,
                 datasets_store: DatasetStore) -> None:
        self._training = Training(settings, store, registry, datasets_store)

    async def CreateTrainingJob(self, request: pb.CreateTrainingJobRequest,
                                context: grpc.aio.ServicerContext) -> pb.CreateTrainingJobResponse:
        return pb.CreateTrainingJobResponse(
            job=await self._training.create(request, caller().tenant))

    async def GetTrainingJob(self, request: pb.GetTrainingJobRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetTrainingJobResponse:
        return pb.GetTrainingJobResponse(
            job=await self._training.get(request.job_id, caller().tenant))

    async def ListTrainingJobs(self, request: pb.ListTrainingJobsRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListTrainingJobsResponse:
        jobs, token = await self._training.list_jobs(request.page_size, request.page_token,
                                                     caller().tenant)
        return pb.ListTrainingJobsResponse(jobs=jobs, next_page_token=token)

    async def CancelTrainingJob(self, request: pb.CancelTrainingJobRequest,
                                context: grpc.aio.ServicerContext) -> pb.CancelTrainingJobResponse:
        return pb.CancelTrainingJobResponse(
            job=await self._training.cancel(request.job_id, caller().tenant))

    async def WatchTrainingJob(self, request: pb.WatchTrainingJobRequest,
                               context: grpc.aio.ServicerContext,
                               ) -> AsyncIterator[pb.WatchTrainingJobResponse]:
        events = self._training.watch(request.job_id, request.after_sequence, caller().tenant)
        async with contextlib.aclosing(events):  # a cancelled call closes the watch at once
            async for event in events:
                yield pb.WatchTrainingJobResponse(event=event)
