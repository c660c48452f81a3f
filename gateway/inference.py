"""The KServe v2 / Triton GRPCInferenceService: translation only; the work is the
InferencePlane's (gateway/plane/inference.py) and the ModelRepository's."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from gateway.auth import call_guard, caller
from gateway.decoupled import is_generation, stream_generation, whole_generation
from gateway.plane.generation import GenerationPlane
from gateway.plane.inference import Caller, InferencePlane
from gateway.repository import ModelRepository
from gateway.streaming import stream_infer
from maas import __version__
from maas.inference import grpc_service_pb2 as pb
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceServicer
from runtime.tracing import from_metadata

# The Triton protocol extensions served in full (docs/inference.md, "The v2 contract"): the
# repository index/load/unload RPCs and ModelConfig. Only `priority` of schedule_policy is
# read, so it is not listed; classification, sequence, statistics and shared memory are not
# served.
EXTENSIONS = ("model_repository", "model_configuration")


def caller_of(context: grpc.aio.ServicerContext) -> Caller:
    """The plane's Caller of a call: the tenant its API key gave (`caller()`), the time left
    before its deadline (None: it set none) and the trace headers of its metadata."""
    return Caller(caller().tenant, context.time_remaining(),
                  from_metadata(context.invocation_metadata()))


class InferenceServicer(GRPCInferenceServiceServicer):
    def __init__(self, plane: InferencePlane, repository: ModelRepository,
                 generation: GenerationPlane | None = None) -> None:
        self._plane = plane
        self._repository = repository
        self._generation = generation

    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.is_ready)

    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=await self._plane.model_ready(
            caller().tenant, request.name, request.version))

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
        return pb.ServerMetadataResponse(name="maas", version=__version__,
                                         extensions=EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        return await self._plane.metadata(request, caller().tenant)

    async def ModelConfig(self, request: pb.ModelConfigRequest,
                          context: grpc.aio.ServicerContext) -> pb.ModelConfigResponse:
        return await self._plane.model_config(request, caller().tenant)

    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        if self._generation is not None and is_generation(request):  # text_input
            return await whole_generation(self._generation, request, caller_of(context),
                                          lambda: self._plane.infer(request, caller_of(context)))
        return await self._plane.infer(request, caller_of(context))

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext,
                               ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Pipelined ModelInfer calls on one stream, errors in-band (gateway/streaming.py)."""
        async with contextlib.aclosing(stream_infer(
                request_iterator, context, self.ModelInfer, call_guard(),
                self._decoupled)) as responses:
            async for response in responses:
                yield response

    def _decoupled(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext,
                   ) -> AsyncIterator[pb.ModelInferResponse] | None:
        """A generation's responses (a generative model, decoupled: gateway/decoupled.py);
        None for any other request."""
        if self._generation is None or not is_generation(request):
            return None
        return stream_generation(self._generation, request, caller_of(context),
                                 lambda: self._plane.infer(request, caller_of(context)))
