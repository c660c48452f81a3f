"""maas.v1.ModelService: translation only; the work is ModelLifecycle's
(gateway/plane/models.py): registration, uploads, downloads, aliases, deletion."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from gateway.plane.models import VERIFY_WAIT_S, ModelLifecycle
from maas.v1 import model_service_pb2 as pb
from maas.v1.model_service_pb2_grpc import ModelServiceServicer
from runtime.artifacts import ArtifactStore
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry


class ModelServicer(ModelServiceServicer):
    def __init__(self, registry: ModelRegistry, queue: JobQueue, store: ArtifactStore,
                 max_message_bytes: int, verify_wait_s: float = VERIFY_WAIT_S,
                 max_model_bytes: int = 64 << 30, upload_ttl_s: float = 86400.0) -> None:
        self.lifecycle = ModelLifecycle(registry, queue, store, verify_wait_s=verify_wait_s,
                                      max_message_bytes=max_message_bytes,
                                      max_model_bytes=max_model_bytes,
                                      upload_ttl_s=upload_ttl_s)

    async def ListModels(self, request: pb.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        models, token = await self.lifecycle.list_models(request.page_size, request.page_token)
        return pb.ListModelsResponse(models=models, next_page_token=token)

    async def GetModel(self, request: pb.GetModelRequest,
                       context: grpc.aio.ServicerContext) -> pb.GetModelResponse:
        return pb.GetModelResponse(model=await self.lifecycle.get(request.name))

    async def RegisterModel(self, request: pb.RegisterModelRequest,
                            context: grpc.aio.ServicerContext) -> pb.RegisterModelResponse:
        return pb.RegisterModelResponse(model_version=await self.lifecycle.register(request))

    async def UploadModel(self, request_iterator: AsyncIterator[pb.UploadModelRequest],
                          context: grpc.aio.ServicerContext) -> pb.UploadModelResponse:
        return pb.UploadModelResponse(
            model_version=await self.lifecycle.upload(request_iterator))

    async def CreateModelUpload(self, request: pb.CreateModelUploadRequest,
                                context: grpc.aio.ServicerContext
                                ) -> pb.CreateModelUploadResponse:
        return pb.CreateModelUploadResponse(
            upload=await self.lifecycle.create_upload(request.start))

    async def GetModelUpload(self, request: pb.GetModelUploadRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetModelUploadResponse:
        return pb.GetModelUploadResponse(
            upload=await self.lifecycle.get_upload(request.upload_id))

    async def DownloadModel(self, request: pb.DownloadModelRequest,
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[pb.DownloadModelResponse]:
        parts = self.lifecycle.download(request.name, request.version)
        async with contextlib.aclosing(parts):  # a cancelled call closes the file at once
            async for part in parts:
                yield (pb.DownloadModelResponse(chunk=part) if isinstance(part, bytes)
                       else pb.DownloadModelResponse(model_version=part))

    async def SetModelAlias(self, request: pb.SetModelAliasRequest,
                            context: grpc.aio.ServicerContext) -> pb.SetModelAliasResponse:
        model, previous = await self.lifecycle.set_alias(request.name, request.alias,
                                                       request.version)
        return pb.SetModelAliasResponse(model=model, previous_version=previous)

    async def DeleteModelAlias(self, request: pb.DeleteModelAliasRequest,
                               context: grpc.aio.ServicerContext) -> pb.DeleteModelAliasResponse:
        return pb.DeleteModelAliasResponse(
            model=await self.lifecycle.delete_alias(request.name, request.alias))

    async def DeleteModelVersion(self, request: pb.DeleteModelVersionRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> pb.DeleteModelVersionResponse:
        return pb.DeleteModelVersionResponse(
            model=await self.lifecycle.delete_version(request.name, request.version))
