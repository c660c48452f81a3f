"""The gateway's grpc.health.v1: the server ("" and each service) and `model/<name>`.

`model/<name>` (or `model/<name>:<version>`) is SERVING when the gateway serves and a live
worker has that version loaded, as v2 ModelReady says; NOT_SERVING otherwise, NOT_FOUND for
an unknown model. It is answered by `Check` at call time (`Watch` knows only the static
names).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2

MODEL_PREFIX = "model/"

ModelReady = Callable[[str, str], Awaitable[bool]]


class GatewayHealth(health.aio.HealthServicer):  # type: ignore[misc]
    def __init__(self, model_ready: ModelReady) -> None:
        super().__init__()
        self._model_ready = model_ready

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        if not request.service.startswith(MODEL_PREFIX):
            return await super().Check(request, context)
        name, _, version = request.service.removeprefix(MODEL_PREFIX).partition(":")
        ready = await self._model_ready(name, version)
        status = health_pb2.HealthCheckResponse
        return status(status=status.SERVING if ready else status.NOT_SERVING)
