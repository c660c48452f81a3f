"""The gateway's grpc.health.v1: the server ("" and each service) and `model/<name>`.

`model/<name>` (or `model/<name>:<version>`) is SERVING when the gateway serves and a live
worker has that version loaded, as v2 ModelReady says; NOT_SERVING otherwise, NOT_FOUND for
an unknown model (`Watch`: SERVICE_UNKNOWN). The name is resolved in the caller's tenant
like any model read: with auth on it needs an API key with the `infer` scope, and another
tenant's model is as unknown as a name nobody registered. The server-wide "" and the plain
service names stay open to anyone (Kubernetes probes).

`Check` answers at call time; `Watch` of a model polls every WATCH_PERIOD_S, sends each
change, and ends with UNAUTHENTICATED once its key is revoked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_health.v1.health_pb2 import HealthCheckResponse

from gateway.auth import Admission, CallGuard
from maas.errors import NotFound

MODEL_PREFIX = "model/"
CHECK_METHOD = "/grpc.health.v1.Health/Check"
WATCH_METHOD = "/grpc.health.v1.Health/Watch"
WATCH_PERIOD_S = 1.0
MODEL_SCOPE = "infer"  # a model's readiness is a model read

# (tenant, name, version) → ready: InferencePlane.model_ready
ModelReady = Callable[[str, str, str], Awaitable[bool]]


class GatewayHealth(health.aio.HealthServicer):  # type: ignore[misc]
    def __init__(self, model_ready: ModelReady, admission: Admission) -> None:
        super().__init__()
        self._model_ready = model_ready
        self._admission = admission

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> HealthCheckResponse:
        if not request.service.startswith(MODEL_PREFIX):
            return await super().Check(request, context)
        guard = await self._admit(context, CHECK_METHOD)
        return HealthCheckResponse(status=await self._model_status(request.service, guard))

    async def Watch(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[HealthCheckResponse]:
        if not request.service.startswith(MODEL_PREFIX):
            await super().Watch(request, context)  # writes with `context.write`
            return
        async for status in self._watch_model(request.service, context):
            yield status

    async def _watch_model(self, service: str,
                           context: grpc.aio.ServicerContext) -> AsyncIterator[HealthCheckResponse]:
        guard = await self._admit(context, WATCH_METHOD)
        last: int | None = None
        while True:
            status = await self._watched_status(service, guard)
            if status != last:
                yield HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(WATCH_PERIOD_S)

    async def _watched_status(self, service: str, guard: CallGuard) -> int:
        await guard.check_key()
        try:
            return await self._model_status(service, guard)
        except NotFound:
            return int(HealthCheckResponse.SERVICE_UNKNOWN)

    async def _admit(self, context: grpc.aio.ServicerContext, method: str) -> CallGuard:
        return await self._admission.enter(context.invocation_metadata(), method, MODEL_SCOPE)

    async def _model_status(self, service: str, guard: CallGuard) -> int:
        """The model's status as the admitted caller's tenant sees it."""
        name, _, version = service.removeprefix(MODEL_PREFIX).partition(":")
        ready = await self._model_ready(guard.identity.tenant, name, version)
        return int(HealthCheckResponse.SERVING if ready else HealthCheckResponse.NOT_SERVING)
