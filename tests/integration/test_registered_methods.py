"""Only the hot methods go on grpc.aio's registered-method path (one pending request each, all
waited on for every call: gateway/registration.py), and every other method of a real gateway
still answers, through the generic handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.registration import HOT_METHODS, HotMethodsOnly
from gateway.server import serve
from maas.inference import grpc_service_pb2, grpc_service_pb2_grpc
from maas.inference import grpc_service_pb2 as pb
from maas.v1 import model_service_pb2, model_service_pb2_grpc
from runtime.settings import Settings
from tests.conftest import RedisServer

pytestmark = pytest.mark.timeout(60)


V2 = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]


async def tasks_of_a_started_server(register: Callable[[grpc.aio.Server], None]) -> int:
    """How many tasks a grpc.aio server keeps once started with what `register` adds (one
    pending request per registered method, and one for the generic handlers)."""
    server = grpc.aio.server()
    register(server)
    server.add_insecure_port("127.0.0.1:0")
    before = len(asyncio.all_tasks())
    await server.start()
    await asyncio.sleep(0.05)
    try:
        return len(asyncio.all_tasks()) - before
    finally:
        await server.stop(None)


async def test_grpc_keeps_a_pending_request_per_registered_method_only() -> None:
    servicer = grpc_service_pb2_grpc.GRPCInferenceServiceServicer()
    every = await tasks_of_a_started_server(
        lambda s: grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, s))
    hot = await tasks_of_a_started_server(
        lambda s: grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            servicer, HotMethodsOnly(s)))
    assert len(V2.methods) > 2
    assert every - hot == len(V2.methods) - len(HOT_METHODS[V2.full_name]) > 0


async def test_every_method_of_the_gateway_still_answers(redis_server: RedisServer,
                                                        tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_server.url, data_dir=tmp_path, shutdown_grace_s=0.5,
                        require_live_worker="off")
    async with (serve(settings, port=0) as gateway,
                grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel):
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
