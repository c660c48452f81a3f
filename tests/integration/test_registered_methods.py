"""A real gateway keeps only its hot methods on grpc.aio's registered-method path (one pending
request each, all waited on for every call: gateway/registration.py), and every other method
still answers, through the generic handlers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.registration import HOT_METHODS
from gateway.server import serve
from maas.inference import grpc_service_pb2 as pb
from maas.inference import grpc_service_pb2_grpc
from maas.v1 import model_service_pb2, model_service_pb2_grpc
from runtime.settings import Settings
from tests.conftest import RedisServer

pytestmark = pytest.mark.timeout(60)


def registered_requests() -> int:
    """grpc.aio's pending requests of registered methods: one task per method."""
    return sum("_request_registered_call" in repr(t) for t in asyncio.all_tasks())


async def test_only_the_hot_methods_are_registered(redis_server: RedisServer,
                                                   tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_server.url, data_dir=tmp_path, shutdown_grace_s=0.5,
                        require_live_worker="off")
    async with serve(settings, port=0) as gateway:
        assert registered_requests() == sum(len(m) for m in HOT_METHODS.values()) == 2
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            v2 = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
            # cold methods of every kind of service, through the generic handlers
            assert (await v2.ServerLive(pb.ServerLiveRequest(), timeout=5)).live
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            listed = await models.ListModels(model_service_pb2.ListModelsRequest(), timeout=5)
            assert isinstance(listed, model_service_pb2.ListModelsResponse)
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            # the hot one, registered: an unknown model is NOT_FOUND, as before
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await v2.ModelInfer(pb.ModelInferRequest(model_name="nope"), timeout=5)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
