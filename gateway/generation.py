"""maas.v1.GenerationService: translation only; the work is the GenerationPlane's
(gateway/plane/generation.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from gateway.inference import caller_of
from gateway.plane.generation import GenerationPlane
from maas.v1.generation_service_pb2 import GenerateRequest, GenerateResponse
from maas.v1.generation_service_pb2_grpc import GenerationServiceServicer


class GenerationServicer(GenerationServiceServicer):
    def __init__(self, plane: GenerationPlane) -> None:
        self._plane = plane

    async def Generate(self, request: GenerateRequest, context: grpc.aio.ServicerContext,
                       ) -> AsyncIterator[GenerateResponse]:
        """One response per token, then the final one (gateway/plane/generation.py)."""
        async with contextlib.aclosing(
                self._plane.generate(request, caller_of(context))) as responses:
            async for response in responses:
                yield response
