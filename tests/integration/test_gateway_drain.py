"""A draining gateway (SIGTERM) refuses new calls with a status a client may retry, answers
health NOT_SERVING, and stops only once the inference calls in flight are done."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import maas
from gateway.drain import RETRY_DELAY_S
from gateway.server import serve
from maas.inference import grpc_service_pb2 as v2
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from runtime.settings import Settings


async def test_draining_gateway_refuses_with_retry_info(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, gateway_port=0,
                        shutdown_grace_s=10)
    async with serve(settings) as gateway:
        in_flight = [1]  # stands for an inference call still waiting for its result
        gateway.in_flight = lambda: in_flight[0]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            v2_stub = GRPCInferenceServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            assert (await v2_stub.ServerReady(v2.ServerReadyRequest(), timeout=5)).ready
            draining = asyncio.create_task(gateway.drain(settings.shutdown_grace_s))
            await asyncio.sleep(0.05)

            try:
                await v2_stub.ServerLive(v2.ServerLiveRequest(), timeout=5)
                raise AssertionError("a draining gateway served a new call")
            except grpc.aio.AioRpcError as exc:
                refused = maas.client.from_rpc_error(exc)
            assert isinstance(refused, maas.Unavailable)
            assert refused.retry_delay_s == RETRY_DELAY_S
            status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert not draining.done(), "stopped with a call in flight"

            in_flight[0] = 0
            await asyncio.wait_for(draining, 5)
